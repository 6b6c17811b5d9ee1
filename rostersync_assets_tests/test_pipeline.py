"""End to end on real parts: in-process SFTP server, local or S3 (moto over HTTP) archive, sandbox LMS
over HTTP, a real Dagster instance. Each test runs the `sync_district_roster` job for one district."""

import json
from dataclasses import replace
from pathlib import Path

from dagster_aws.s3 import S3Resource

from rostersync_assets.connectors.ledger import SyncLedger
from rostersync_assets.defs.resources import S3ArchiveResource
from rostersync_assets.oneroster.profile import DistrictProfile
from rostersync_assets.registry import DistrictRegistry
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.sandbox.generator import DistrictRoster, generate_district, next_night
from rostersync_assets_tests.fixtures.pipeline import SLUG, TENANT

STUDENTS = 300
ALL_ASSETS = {
    "raw_roster_delivery",
    "archived_roster_delivery",
    *(f"oneroster/{e}" for e in ENTITIES),
    "roster_changes",
    "lms_sync_results",
}


def materialized(result) -> dict[str, dict]:
    return {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def lms_ids(pipeline, entity: str) -> set[str]:
    return set(pipeline.lms.store.active_records(TENANT, entity))


def roster_ids(roster: DistrictRoster, entity: str) -> set[str]:
    return set(roster.tables[entity]["sourcedId"])


def test_first_night_syncs_everything_and_the_next_only_the_changes(district_pipeline):
    roster = generate_district(students=STUDENTS, seed=7, district=SLUG)
    district_pipeline.publish(roster)
    first = district_pipeline.run()
    assert first.success
    events = materialized(first)
    assert set(events) == ALL_ASSETS
    assert events["lms_sync_results"]["created"] == sum(len(t) for t in roster.tables.values())
    assert events["lms_sync_results"]["failed"] == 0
    for entity in ENTITIES:
        assert lms_ids(district_pipeline, entity) == roster_ids(roster, entity), entity
    assert all(e.passed for e in first.get_asset_check_evaluations())

    tomorrow, expected = next_night(roster, seed=7, night=2)
    district_pipeline.publish(tomorrow)
    second = district_pipeline.run()
    assert second.success
    synced = materialized(second)["lms_sync_results"]
    assert {k: synced[k] for k in ("created", "updated", "deactivated")} == expected.counts()
    for entity in ENTITIES:
        assert lms_ids(district_pipeline, entity) == roster_ids(tomorrow, entity), entity
    log = district_pipeline.lms.store.idempotency_log()
    assert log and all(row.times_seen == 1 for row in log)


def test_the_same_delivery_twice_writes_nothing_the_second_time(district_pipeline):
    district_pipeline.publish(generate_district(students=STUDENTS, seed=3, district=SLUG))
    assert district_pipeline.run().success
    batches = len(district_pipeline.lms.store.idempotency_log())
    again = district_pipeline.run()
    assert again.success
    events = materialized(again)
    assert events["archived_roster_delivery"]["objects_written"] == 0
    assert events["roster_changes"]["dagster/row_count"] == 0
    assert len(district_pipeline.lms.store.idempotency_log()) == batches


def test_a_failed_blocking_check_means_zero_lms_writes_yet_the_delivery_is_archived(district_pipeline):
    roster = generate_district(students=STUDENTS, seed=5, district=SLUG)
    enrollments = roster.tables["enrollments"].copy()
    broken = enrollments.index[::10]  # 10 % of enrollments name a class that does not exist
    enrollments.loc[broken, "classSourcedId"] = "cls-does-not-exist"
    roster.tables["enrollments"] = enrollments
    district_pipeline.publish(roster)
    result = district_pipeline.run()
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"enrollments_references_resolve"}
    assert "lms_sync_results" not in materialized(result) and "roster_changes" not in materialized(result)
    assert district_pipeline.lms.store.idempotency_log() == []
    archived = list((district_pipeline.home.archive_dir / SLUG).rglob("manifest.json"))
    assert len(archived) == 1
    manifest = json.loads(archived[0].read_text())
    assert {f["name"] for f in manifest["files"]} >= {"enrollments.csv", "manifest.csv"}


def test_a_truncated_users_file_is_held_before_it_deactivates_anyone(district_pipeline):
    roster = generate_district(students=STUDENTS, seed=11, district=SLUG)
    district_pipeline.publish(roster)
    assert district_pipeline.run().success
    writes_before = len(district_pipeline.lms.store.idempotency_log())
    users = roster.tables["users"]
    truncated = DistrictRoster({**roster.tables, "users": users.iloc[: len(users) // 2].reset_index(drop=True)})
    # keep the package self-consistent so only the safety rule can stop it
    kept = set(truncated.tables["users"]["sourcedId"])
    for entity, column in (("enrollments", "userSourcedId"), ("demographics", "sourcedId")):
        table = roster.tables[entity]
        truncated.tables[entity] = table[table[column].isin(kept)].reset_index(drop=True)
    district_pipeline.publish(truncated)
    result = district_pipeline.run()
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"roster_changes_within_deactivation_limit"}
    assert len(district_pipeline.lms.store.idempotency_log()) == writes_before
    assert lms_ids(district_pipeline, "users") == roster_ids(roster, "users")


def test_archive_on_s3_through_dagster_aws(district_pipeline, s3_server, s3_bucket):
    client, bucket = s3_bucket
    district_pipeline.publish(generate_district(students=50, seed=2, district=SLUG))
    archive = S3ArchiveResource(s3=S3Resource(endpoint_url=s3_server, region_name="us-east-1"), bucket=bucket, prefix="raw")
    result = district_pipeline.run(archive=archive)
    assert result.success
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    delivery_id = materialized(result)["archived_roster_delivery"]["delivery_id"]
    day = f"{delivery_id[:4]}/{delivery_id[4:6]}/{delivery_id[6:8]}"  # the id starts with the delivery's UTC time
    assert all(k.startswith(f"raw/{SLUG}/{day}/{delivery_id}/") for k in keys)
    assert {k.rsplit("/", 1)[1] for k in keys} >= {"manifest.json", "manifest.csv", "users.csv", "enrollments.csv"}
    head = client.head_object(Bucket=bucket, Key=next(k for k in keys if k.endswith("users.csv")))
    assert head["ServerSideEncryption"] == "AES256"


def test_a_package_rejected_as_a_whole_fails_every_schema_check_by_rule_and_writes_nothing(district_pipeline):
    district_pipeline.publish(generate_district(students=50, seed=5, district=SLUG))
    (district_pipeline.sftp.drop_dir / "manifest.csv").write_bytes(b"propertyName,value\noneroster.version,2.0\n")
    result = district_pipeline.run()
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert {e.check_name for e in failed} == {f"{entity}_schema_valid" for entity in ENTITIES}
    assert all(e.metadata["rule manifest.version_unsupported"].value == 1 for e in failed)
    assert district_pipeline.lms.store.idempotency_log() == []


def test_a_row_rejected_within_the_share_is_quarantined_and_never_read_as_a_removal(district_pipeline):
    roster = generate_district(students=STUDENTS, seed=17, district=SLUG)
    district_pipeline.publish(roster)
    assert district_pipeline.run().success
    users = roster.tables["users"].copy()
    student = users.index[users["role"] == "student"][0]
    quarantined = users.at[student, "sourcedId"]
    users.at[student, "role"] = "pupil"  # not a OneRoster role: the row is rejected
    district_pipeline.publish(DistrictRoster({**roster.tables, "users": users}))
    result = district_pipeline.run()
    assert result.success  # 1 row of ~320 is within the 2 % share
    events = materialized(result)
    assert events["oneroster/users"]["rejected_rows"] == 1
    assert quarantined in lms_ids(district_pipeline, "users")  # still active: not deactivated
    assert events["roster_changes"]["deactivations"] == 0
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    diagnostics_uri = checks["users_schema_valid"].metadata["diagnostics"].value
    assert diagnostics_uri.startswith((district_pipeline.home.archive_dir / SLUG).as_uri())
    findings = json.loads(Path(diagnostics_uri.removeprefix("file://")).read_text())
    assert [(d["rule"], d["file"], d["column"]) for d in findings if d["severity"] == "error"][0] == (
        "value.enum", "users.csv", "role"
    )


def test_a_clever_district_onboards_the_same_way(district_pipeline):
    samples = Path(__file__).resolve().parents[2] / "shared" / "oneroster-samples" / "clever-sandbox"
    for path in samples.glob("*.csv"):
        (district_pipeline.sftp.drop_dir / path.name).write_bytes(path.read_bytes())
    # The admin confirmed the export's date format (M/D/YY) when registering the district.
    registry = DistrictRegistry.load(district_pipeline.home.registry_path)
    profiled = replace(registry.get(SLUG), profile=DistrictProfile(date_format="%m/%d/%y"))
    registry.with_district(profiled).save(district_pipeline.home.registry_path)
    result = district_pipeline.run()
    assert result.success, [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    enrollments = district_pipeline.lms.store.active_records(TENANT, "enrollments")
    assert sum(1 for record in enrollments.values() if record["role"] == "student") == 8971
    # users come from two Clever files: the ledger names each record's own file and line
    with SyncLedger(district_pipeline.home.ledger_path) as ledger:
        teacher, student = ledger.history(SLUG, "47"), ledger.history(SLUG, "738733110")
    assert [(h["entity"], h["source_file"], h["source_line"]) for h in teacher] == [("users", "teachers.csv", 2)]
    assert sorted((h["entity"], h["source_file"], h["source_line"]) for h in student) == [
        ("demographics", "students.csv", 2), ("users", "students.csv", 2)
    ]


def test_a_delta_delivery_resolves_references_against_what_the_lms_holds(district_pipeline):
    roster = generate_district(students=STUDENTS, seed=19, district=SLUG)
    district_pipeline.publish(roster)
    assert district_pipeline.run().success
    enrollments = roster.tables["enrollments"]
    student = enrollments[enrollments["role"] == "student"].iloc[0]
    stamp = "2026-09-02T02:00:00.000Z"
    header = ",".join(enrollments.columns)
    rows = [
        # a new enrollment of an existing student in an existing class: neither is in this package
        f"enr-delta-1,active,{stamp},{student.classSourcedId},{student.schoolSourcedId},{student.userSourcedId},student,false,,",
        # an enrollment naming a class that exists nowhere: parked, not synced, not an error
        f"enr-delta-2,active,{stamp},cls-nowhere,{student.schoolSourcedId},{student.userSourcedId},student,false,,",
    ]
    drop = district_pipeline.sftp.drop_dir
    for old in drop.iterdir():
        old.unlink()
    (drop / "enrollments.csv").write_text("\n".join([header, *rows]) + "\n")
    modes = {entity: "absent" for entity in ENTITIES} | {"enrollments": "delta"}
    unsynced = ["categories", "classResources", "courseResources", "lineItems", "resources", "results"]
    manifest = ["propertyName,value", "manifest.version,1.0", "oneroster.version,1.1"]
    manifest += [f"file.{name},{mode}" for name, mode in modes.items()] + [f"file.{name},absent" for name in unsynced]
    (drop / "manifest.csv").write_text("\n".join(manifest) + "\n")
    result = district_pipeline.run()
    assert result.success
    live = district_pipeline.lms.store.active_records(TENANT, "enrollments")
    assert "enr-delta-1" in live and "enr-delta-2" not in live
    assert set(roster_ids(roster, "enrollments")) <= set(live)  # a delta removes nothing it does not name
