"""Drift end to end: real SFTP server, sandbox LMS over HTTP, a real Dagster instance.

The "outside rostersync" edits go straight into the sandbox LMS's database through
`SandboxLmsStore.apply_batch`, as an LMS administrator's edits would, bypassing rostersync entirely.
"""

import pandas as pd

from rostersync_assets.defs.sync.drift import DRIFT_CHECK
from rostersync_assets.sandbox.generator import DistrictRoster, generate_district
from rostersync_assets_tests.fixtures.pipeline import SLUG, TENANT

STUDENTS = 40
KIND_TOTALS = ("changed_in_lms", "deactivated_in_lms", "reactivated_in_lms", "added_in_lms", "missing_in_lms")


def drift_check(result):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == DRIFT_CHECK]
    return evaluation, {k: v.value for k, v in evaluation.metadata.items()}


def run_log(pipeline, result) -> str:
    return "\n".join(entry.user_message or "" for entry in pipeline.instance.all_logs(result.run_id))


def students(roster: DistrictRoster) -> pd.DataFrame:
    users = roster.tables["users"]
    return users[users["role"] == "student"].reset_index(drop=True)


def test_lms_side_edits_are_reported_by_id_and_only_a_delivery_change_overwrites_them(district_pipeline):
    roster = generate_district(students=STUDENTS, seed=23, district=SLUG)
    district_pipeline.publish(roster)
    first = district_pipeline.run()
    assert first.success
    evaluation, _ = drift_check(first)
    assert evaluation.passed  # onboarding: the LMS holds exactly what rostersync wrote

    lms = district_pipeline.lms.store
    edited, suspended, updated_by_district = students(roster)["sourcedId"].iloc[:3]
    renamed_class = roster.tables["classes"]["sourcedId"].iloc[0]
    dropped_enrollment = roster.tables["enrollments"]["sourcedId"].iloc[0]
    live_users = lms.active_records(TENANT, "users")
    live_class = lms.active_records(TENANT, "classes")[renamed_class]
    # An LMS administrator edits the LMS directly: rostersync never hears of it.
    lms.apply_batch(TENANT, "users", [
        {"op": "upsert", "sourcedId": edited, "record": live_users[edited] | {"identifier": "LMS-EDIT"}},
        {"op": "deactivate", "sourcedId": suspended},
        {"op": "upsert", "sourcedId": "usr-lms-admin", "record": {"sourcedId": "usr-lms-admin", "role": "administrator"}},
    ], "lms-admin:users")
    lms.apply_batch(TENANT, "classes", [
        {"op": "upsert", "sourcedId": renamed_class, "record": live_class | {"title": "Renamed in the LMS"}},
    ], "lms-admin:classes")
    lms.apply_batch(TENANT, "enrollments", [{"op": "deactivate", "sourcedId": dropped_enrollment}], "lms-admin:enrollments")
    batches_before = len(lms.idempotency_log())

    # The same delivery again: nothing to write, and the check names every LMS-side edit.
    again = district_pipeline.run()
    assert again.success
    assert len(lms.idempotency_log()) == batches_before
    evaluation, metadata = drift_check(again)
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert {k: metadata[k] for k in (*KIND_TOTALS, "drifted", "conflicts")} == {
        "changed_in_lms": 2, "deactivated_in_lms": 2, "reactivated_in_lms": 0, "added_in_lms": 1,
        "missing_in_lms": 0, "drifted": 5, "conflicts": 0,
    }
    samples = metadata["samples"]
    for row in (
        f"| users | changed_in_lms | 1 | {edited} | - |",
        f"| users | deactivated_in_lms | 1 | {suspended} | - |",
        "| users | added_in_lms | 1 | usr-lms-admin | - |",
        f"| classes | changed_in_lms | 1 | {renamed_class} | - |",
        f"| enrollments | deactivated_in_lms | 1 | {dropped_enrollment} | - |",
    ):
        assert row in samples, row
    users = roster.tables["users"]
    personal = set(users[["givenName", "familyName", "email", "username"]].to_numpy().ravel()) - {""}
    assert not [v for v in personal if v in samples + metadata["by_entity"]]

    # Night 2: the district renames the class the LMS renamed (a conflict), drops the enrollment the
    # LMS already dropped (converged) and updates another student; it leaves the other edits alone.
    tomorrow = {entity: table.copy() for entity, table in roster.tables.items()}
    tomorrow["classes"].loc[tomorrow["classes"]["sourcedId"] == renamed_class, "title"] = "Renamed by the district"
    tomorrow["users"].loc[tomorrow["users"]["sourcedId"] == updated_by_district, "identifier"] = "SIS-EDIT"
    tomorrow["enrollments"] = tomorrow["enrollments"][tomorrow["enrollments"]["sourcedId"] != dropped_enrollment]
    district_pipeline.publish(DistrictRoster(tomorrow))
    night2 = district_pipeline.run()
    assert night2.success  # drift, even a conflict, never holds the sync
    evaluation, metadata = drift_check(night2)
    assert not evaluation.passed and (metadata["drifted"], metadata["conflicts"]) == (5, 1)
    assert f"| classes | changed_in_lms | 1 | {renamed_class} | {renamed_class} |" in metadata["samples"]
    assert f"| enrollments | deactivated_in_lms | 1 | {dropped_enrollment} | - |" in metadata["samples"]
    assert "drift conflict: classes: 1 record(s) changed_in_lms" in run_log(district_pipeline, night2)
    assert renamed_class in run_log(district_pipeline, night2)

    users_now = lms.active_records(TENANT, "users")
    assert users_now[edited]["identifier"] == "LMS-EDIT"  # not overwritten: the delivery did not change it
    assert suspended not in users_now and "usr-lms-admin" in users_now
    assert users_now[updated_by_district]["identifier"] == "SIS-EDIT"
    assert lms.active_records(TENANT, "classes")[renamed_class]["title"] == "Renamed by the district"  # reported first
    assert dropped_enrollment not in lms.active_records(TENANT, "enrollments")
