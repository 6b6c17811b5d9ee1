"""`rostersync replay`: an archived delivery re-run through the pipeline, from the archive, not the SFTP server."""

from __future__ import annotations

import io
import shutil

import dagster as dg
from rostersync_assets.defs.ingest.delivery_runs import TRIGGER_TAG
from rostersync_assets.replay_command import REPLAY_TAG, run_replay
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets_tests.fixtures.pipeline import SLUG, TENANT, DistrictPipeline


def _replay(pipeline: DistrictPipeline, delivery_id: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_replay(pipeline.home, SLUG, delivery_id, out=out, err=err, instance=pipeline.instance)
    return code, out.getvalue(), err.getvalue()


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def test_replay_rebuilds_a_night_from_the_archive_alone(district_pipeline: DistrictPipeline) -> None:
    roster = generate_district(students=30, seed=11, district=SLUG)
    district_pipeline.publish(roster)
    first = district_pipeline.run()
    assert first.success
    delivery_id = str(_metadata(first, "archived_roster_delivery")["delivery_id"])
    lms_before = district_pipeline.lms.store.active_records(TENANT, "users")

    # The server no longer holds the night, and the tables are lost: only the archive has it.
    for path in district_pipeline.sftp.drop_dir.iterdir():
        path.unlink()
    shutil.rmtree(district_pipeline.home.tables_dir)
    shutil.rmtree(district_pipeline.home.staging_dir)

    code, out, err = _replay(district_pipeline, delivery_id)

    assert code == 0, out + err
    assert f"{SLUG}: delivery {delivery_id}: 0 created, 0 updated, 0 deactivated, 0 failed" in out
    run = district_pipeline.instance.get_runs()[0]
    assert run.tags[REPLAY_TAG] == delivery_id and run.tags[TRIGGER_TAG] == "replay"
    records = district_pipeline.instance.fetch_materializations(dg.AssetKey("raw_roster_delivery"), limit=1).records
    assert records[0].asset_materialization.metadata["delivery_id"].value == delivery_id
    assert district_pipeline.lms.store.active_records(TENANT, "users") == lms_before
    assert any(district_pipeline.home.tables_dir.iterdir()), "the replay rebuilt the validated tables"


def test_replay_of_an_unarchived_delivery_is_refused(district_pipeline: DistrictPipeline) -> None:
    code, _, err = _replay(district_pipeline, "20260901T020000Z-0123456789ab")
    assert code == 1
    assert f"district {SLUG}: delivery 20260901T020000Z-0123456789ab is not in the archive" in err
    assert district_pipeline.instance.get_runs() == []


def test_replay_with_a_malformed_delivery_id_is_a_usage_error(district_pipeline: DistrictPipeline) -> None:
    code, _, err = _replay(district_pipeline, "../etc")
    assert code == 2 and "is not of the form" in err
