"""Safety holds, approvals and preview mode end to end: in-process SFTP server, sandbox LMS over HTTP,
a real Dagster instance and the `rostersync approve` command on the same home folder."""

from dataclasses import replace


from rostersync_assets.cli import main as rostersync
from rostersync_assets.connectors.ledger import SyncLedger
from rostersync_assets.oneroster.spec import ENTITIES
from rostersync_assets.registry import DistrictRegistry
from rostersync_assets.sandbox.generator import DistrictRoster, generate_district
from rostersync_assets.sync.safety import SafetyPolicy
from rostersync_assets_tests.fixtures.pipeline import SLUG, TENANT

STUDENTS = 60
SAFETY_CHECKS = {
    "roster_changes_within_deactivation_limit",
    "roster_changes_within_update_limit",
    "roster_changes_without_id_churn",
}


def metadata(result, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()} if events else {}


def checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def failed(result) -> set[str]:
    return {name for name, e in checks(result).items() if not e.passed}


def lms_state(pipeline) -> dict[str, set[str]]:
    return {entity: set(pipeline.lms.store.active_records(TENANT, entity)) for entity in ENTITIES}


def onboard(pipeline, seed: int) -> DistrictRoster:
    roster = generate_district(students=STUDENTS, seed=seed, district=SLUG)
    pipeline.publish(roster)
    assert pipeline.run().success
    return roster


def approve(pipeline, delivery_id: str, by: str = "Dana Ops", capsys=None) -> tuple[int, str, str]:
    code = rostersync(["approve", SLUG, delivery_id, "--by", by, "--home", str(pipeline.home.root)])
    out, err = capsys.readouterr()
    return code, out, err


def without_students(roster: DistrictRoster) -> DistrictRoster:
    """users.csv emptied of all students but one (demographics.csv, students only, may not be empty in
    bulk mode); enrollments and demographics kept consistent, so only the safety rules can stop it."""
    users = roster.tables["users"]
    first_student = users.index[users["role"] == "student"][0]
    staff = users[(users["role"] != "student") | (users.index == first_student)].reset_index(drop=True)
    kept = set(staff["sourcedId"])
    tables = {**roster.tables, "users": staff}
    enrollments = roster.tables["enrollments"]
    tables["enrollments"] = enrollments[enrollments["userSourcedId"].isin(kept)].reset_index(drop=True)
    demographics = roster.tables["demographics"]
    tables["demographics"] = demographics[demographics["sourcedId"].isin(kept)].reset_index(drop=True)
    return DistrictRoster(tables)


def with_re_keyed_classes(roster: DistrictRoster) -> DistrictRoster:
    """Every class under a new sourcedId (same classCode, school and terms), enrollments following."""
    classes = roster.tables["classes"].copy()
    classes["sourcedId"] = "new-" + classes["sourcedId"]
    enrollments = roster.tables["enrollments"].copy()
    enrollments["classSourcedId"] = "new-" + enrollments["classSourcedId"]
    return DistrictRoster({**roster.tables, "classes": classes, "enrollments": enrollments})


def test_a_delivery_that_empties_users_is_held_until_approved_with_rostersync_approve(district_pipeline, capsys):
    roster = onboard(district_pipeline, seed=31)
    before, batches = lms_state(district_pipeline), len(district_pipeline.lms.store.idempotency_log())

    emptied = without_students(roster)
    district_pipeline.publish(emptied)
    held = district_pipeline.run()
    assert not held.success
    assert failed(held) == {"roster_changes_within_deactivation_limit"}
    check = checks(held)["roster_changes_within_deactivation_limit"]
    assert f"users district-wide: {STUDENTS - 1} of {STUDENTS + 4} active record(s) deactivated" in check.metadata["held"].value
    sample = check.metadata["sample_ids"].value.split(", ")
    assert len(sample) == 10 and set(sample) <= set(roster.tables["users"]["sourcedId"])
    assert "| users |" in check.metadata["counts_by_school"].value  # the school lost its students too
    assert lms_state(district_pipeline) == before and len(district_pipeline.lms.store.idempotency_log()) == batches
    delivery_id = metadata(held, "roster_changes")["delivery_id"]

    code, out, err = approve(district_pipeline, "20990101T000000Z-000000000000", capsys=capsys)
    assert code == 1 and f"the last judged delivery is {delivery_id}" in err
    code, out, err = approve(district_pipeline, delivery_id, capsys=capsys)
    assert code == 0, err
    assert f"deactivation: users district-wide: {STUDENTS - 1} of {STUDENTS + 4}" in out and "approved by Dana Ops" in out
    assert not set(roster.tables["users"]["email"]) & set(out.split())  # ids and counts only
    with SyncLedger(district_pipeline.home.ledger_path) as ledger:
        approval = ledger.approval_for(SLUG, delivery_id)
    assert approval is not None and approval.approved_by == "Dana Ops" and approval.run_id == ""

    released = district_pipeline.run()
    assert released.success
    passed = checks(released)["roster_changes_within_deactivation_limit"]
    assert passed.passed and passed.metadata["approved_by"].value == "Dana Ops"
    assert metadata(released, "lms_sync_results")["deactivated"] > 0
    assert lms_state(district_pipeline)["users"] == set(emptied.tables["users"]["sourcedId"])


def test_an_empty_bulk_users_file_never_reaches_the_change_set(district_pipeline, capsys):
    roster = onboard(district_pipeline, seed=37)
    before, batches = lms_state(district_pipeline), len(district_pipeline.lms.store.idempotency_log())
    district_pipeline.publish(roster)
    users = district_pipeline.sftp.drop_dir / "users.csv"
    users.write_text(users.read_text().splitlines()[0] + "\n")  # the header only, still declared bulk
    result = district_pipeline.run()
    assert not result.success
    assert "users_schema_valid" in failed(result) and not metadata(result, "roster_changes")
    assert lms_state(district_pipeline) == before and len(district_pipeline.lms.store.idempotency_log()) == batches
    # nothing was judged for this delivery, so there is nothing an approval could release
    code, _, err = approve(district_pipeline, metadata(result, "archived_roster_delivery")["delivery_id"], capsys=capsys)
    assert code == 1 and "not" in err


def test_re_keyed_classes_are_held_as_id_churn_until_a_run_config_approval_names_the_delivery(district_pipeline):
    roster = onboard(district_pipeline, seed=41)
    before, batches = lms_state(district_pipeline), len(district_pipeline.lms.store.idempotency_log())
    re_keyed = with_re_keyed_classes(roster)
    district_pipeline.publish(re_keyed)
    held = district_pipeline.run()
    assert not held.success
    assert failed(held) == SAFETY_CHECKS  # classes deactivated and re-created, every enrollment moved (updated)
    churn = checks(held)["roster_changes_without_id_churn"]
    assert churn.metadata["sample_ids"].value.startswith("cls-0000001->new-cls-0000001")
    assert lms_state(district_pipeline) == before and len(district_pipeline.lms.store.idempotency_log()) == batches
    delivery_id = metadata(held, "roster_changes")["delivery_id"]

    wrong = district_pipeline.run(ops={"roster_changes": {"config": {"approve_delivery": "20250101T000000Z-abc", "approved_by": "Lee"}}})
    assert not wrong.success and not metadata(wrong, "roster_changes")
    assert lms_state(district_pipeline) == before

    released = district_pipeline.run(ops={"roster_changes": {"config": {"approve_delivery": delivery_id, "approved_by": "Lee"}}})
    assert released.success
    assert all(checks(released)[name].passed for name in SAFETY_CHECKS)
    assert checks(released)["roster_changes_without_id_churn"].metadata["approved_by"].value == "Lee"
    with SyncLedger(district_pipeline.home.ledger_path) as ledger:
        assert ledger.approval_for(SLUG, delivery_id).run_id == released.run_id
    assert lms_state(district_pipeline)["classes"] == set(re_keyed.tables["classes"]["sourcedId"])


def test_preview_mode_runs_up_to_the_change_set_and_writes_nothing(district_pipeline):
    registry = DistrictRegistry.load(district_pipeline.home.registry_path)
    preview = replace(registry.get(SLUG), sync=SafetyPolicy(mode="preview"))
    registry.with_district(preview).save(district_pipeline.home.registry_path)
    roster = generate_district(students=STUDENTS, seed=43, district=SLUG)
    district_pipeline.publish(roster)
    result = district_pipeline.run()
    assert result.success
    total = sum(len(t) for t in roster.tables.values())
    synced = metadata(result, "lms_sync_results")
    assert synced["preview"] == f"preview: {total} changes not sent" and synced["batches"] == 0
    assert metadata(result, "roster_changes")["mode"] == "preview"
    assert district_pipeline.lms.store.idempotency_log() == []
    assert all(not ids for ids in lms_state(district_pipeline).values())
    with SyncLedger(district_pipeline.home.ledger_path) as ledger:
        assert all(ledger.load_state(SLUG, entity).empty for entity in ENTITIES)
