"""`rostersync replay DISTRICT DELIVERY_ID`: run the pipeline again on an archived delivery.

For a night that has to be rebuilt (tables lost, a rule fixed) or re-synced (the LMS restored from a
backup, an approval given after the fact). The delivery comes from the write-once archive, never from
the district's server, through run config on `raw_roster_delivery` (`replay_delivery_id`): every
later step, check and safety limit is the nightly one, and the change set is computed against what
the LMS acknowledged, so replaying an older night brings the LMS back to that night's roster.
Exit codes: 0 synced, 1 the run failed or was held (the output says which checks), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, TextIO

from rostersync_assets.home import RostersyncHome

if TYPE_CHECKING:
    import dagster as dg

PROG = "rostersync replay"
REPLAY_TAG = "rostersync/replay_of"


def run_replay(
    home: RostersyncHome, district: str, delivery_id: str, *, out: TextIO, err: TextIO, instance: dg.DagsterInstance | None = None
) -> int:
    """Replay one archived delivery of `district` on `instance` (default: the home's); returns the exit code."""
    import dagster as dg

    from rostersync_assets.connectors.replay import delivered_at_of
    from rostersync_assets.definitions import ENV_VAR, build_definitions
    from rostersync_assets.defs.ingest.delivery_runs import TRIGGER_TAG
    from rostersync_assets.defs.partitions import DISTRICT_TAG
    from rostersync_assets.defs.resources import build_resources
    from rostersync_assets.onboarding_runs import register_partition, run_partition
    from rostersync_assets.registry import DistrictRegistry, RegistryError

    try:
        DistrictRegistry.load(home.registry_path).get(district)
        delivered_at = delivered_at_of(delivery_id)
    except (RegistryError, ValueError) as error:
        print(f"{PROG}: {error} ({home.registry_path})", file=err)
        return 2
    resources = build_resources(os.environ.get(ENV_VAR, "local"), home)
    with dg.build_resources({"archive": resources["archive"]}) as built:
        try:
            manifest = built.archive.open().load_manifest(district, delivery_id, delivered_at)
        except FileNotFoundError:
            print(f"{PROG}: district {district}: delivery {delivery_id} is not in the archive", file=err)
            return 1
    print(f"district {district}: replaying delivery {delivery_id} ({len(manifest['files'])} files from the archive)", file=out, flush=True)
    tags = {DISTRICT_TAG: district, TRIGGER_TAG: "replay", REPLAY_TAG: delivery_id}
    run_config = {"ops": {"raw_roster_delivery": {"config": {"replay_delivery_id": delivery_id}}}}
    with dg.DagsterInstance.get() if instance is None else nullcontext(instance) as target:
        register_partition(target, district)
        summary = run_partition(target, build_definitions(resources), district, tags, run_config)
    print(summary.describe(), file=out)
    print(f"in the Dagster UI: Runs > {summary.run_id} (tag {REPLAY_TAG}={delivery_id})", file=out)
    return 0 if summary.success and summary.failed == 0 else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from rostersync_assets.cli import _quiet_dagster

    _quiet_dagster()
    home = RostersyncHome.resolve(args.home).ensure()
    os.environ.update(home.environment())
    return run_replay(home, args.district, args.delivery_id, out=sys.stdout, err=sys.stderr)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The `replay` command (called from cli.build_parser)."""
    replay = commands.add_parser("replay", help="run the pipeline again on an archived delivery (not the SFTP server)")
    replay.add_argument("district", metavar="DISTRICT", help="the district's slug")
    replay.add_argument("delivery_id", metavar="DELIVERY_ID", help="the archived delivery (as in the archive and the ledger)")
    replay.add_argument("--home", help="home folder (default: $ROSTERSYNC_HOME or ./.rostersync)")
    replay.set_defaults(run=cmd_replay)
