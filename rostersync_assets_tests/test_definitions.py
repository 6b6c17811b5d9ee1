"""The code location: it loads (as `dagster definitions validate` does) and follows the conventions."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from rostersync_assets.definitions import build_definitions, defs
from rostersync_assets.defs.partitions import districts_partitions
from rostersync_assets.defs.resources import build_resources
from rostersync_assets.home import RostersyncHome
from rostersync_assets.oneroster.spec import ENTITIES

REPO = Path(__file__).resolve().parents[1]
EXPECTED_ASSETS = {"raw_roster_delivery", "archived_roster_delivery", *(f"oneroster/{e}" for e in ENTITIES), "roster_changes", "lms_sync_results"}


def loaded(tmp_path) -> dg.Definitions:
    return build_definitions(build_resources("local", RostersyncHome(tmp_path)))


def test_definitions_load(tmp_path):
    dg.Definitions.validate_loadable(loaded(tmp_path))


def test_every_asset_is_partitioned_by_district_and_documented(tmp_path):
    graph = loaded(tmp_path).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == EXPECTED_ASSETS
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.partitions_def == districts_partitions, key
        assert spec.group_name in {"ingest", "oneroster", "sync"}, key
        assert spec.kinds and spec.owners and spec.description, key


def test_blocking_checks_guard_every_table_and_the_change_set(tmp_path):
    graph = loaded(tmp_path).resolve_asset_graph()
    checks = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    for entity in ENTITIES:
        for rule in ("schema_valid", "sourced_ids_unique", "references_resolve"):
            assert checks[f"{entity}_{rule}"].blocking
    assert checks["roster_changes_within_deactivation_limit"].blocking


def test_lazy_definitions_object_is_what_the_workspace_loads():
    workspace = (REPO / "workspace.yaml").read_text()
    assert "rostersync_assets.definitions" in workspace and "attribute: defs" in workspace
    assert callable(defs)


def test_dagster_cli_validates_the_workspace(tmp_path):
    env = {"ROSTERSYNC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Validation successful" in done.stdout + done.stderr
