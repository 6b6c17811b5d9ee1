"""`rostersync approve DISTRICT DELIVERY_ID --by NAME`: release a change set the safety checks held.

An approval names the delivery it releases, so it can never release a later, different file. The
command approves only the district's most recently judged delivery (the verdict `roster_changes` keeps
beside the tables), shows what it releases (held counts and sample ids, never record contents) and
records the approval in the ledger. The next run of the district's sync for that delivery passes the
safety checks and names who approved it and when.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from rostersync_assets.home import RostersyncHome

USAGE_ERROR = 2
REFUSED = 1


def run_approve(home: RostersyncHome, district: str, delivery_id: str, approved_by: str, *, out: TextIO, err: TextIO) -> int:
    """Approve a held delivery; 0 approved (or already approved), 1 refused, 2 usage error."""
    # Imported here: the CLI builds its parser for every command, these pull in SQLAlchemy and pandas.
    from rostersync_assets.ledger_command import LedgerUnavailable, open_ledger
    from rostersync_assets.registry import DistrictRegistry, RegistryError
    from rostersync_assets.sync.verdicts import approval_summary, load_judged_delivery

    if not approved_by.strip():
        print("rostersync approve: --by must name the person approving", file=err)
        return USAGE_ERROR
    try:
        DistrictRegistry.load(home.registry_path).get(district)
    except RegistryError as error:
        print(f"rostersync approve: {error} in {home.registry_path}", file=err)
        return USAGE_ERROR
    judged = load_judged_delivery(home.tables_dir, district)
    if judged is None:
        print(f"rostersync approve: district {district}: no change set has been judged yet; nothing to approve", file=err)
        return REFUSED
    if judged.delivery_id != delivery_id:
        print(
            f"rostersync approve: district {district}: the last judged delivery is {judged.delivery_id} "
            f"(at {judged.evaluated_at}), not {delivery_id}; only that delivery can be approved",
            file=err,
        )
        return REFUSED
    if not judged.verdict.held:
        print(f"rostersync approve: district {district}: delivery {delivery_id} was not held; nothing to approve", file=err)
        return REFUSED
    try:
        ledger = open_ledger(str(home.root), None)  # ROSTERSYNC_LEDGER_URL, else the home's SQLite file
    except LedgerUnavailable as error:
        print(f"rostersync approve: {error}", file=err)
        return REFUSED
    with ledger as store:
        existing = store.approval_for(district, delivery_id)
        if existing is not None:
            print(f"district {district}: delivery {delivery_id} was already approved by {existing.approved_by} at {existing.approved_at}", file=out)
            return 0
        print(f"district {district}: delivery {delivery_id} held by {len(judged.verdict.holds)} rule(s) (judged at {judged.evaluated_at}):", file=out)
        for hold in judged.verdict.holds:
            print(f"  - {hold.kind}: {hold.describe()}", file=out)
        print("changes per entity (create / update / reactivate / deactivate of active before):", file=out)
        for c in judged.verdict.entity_counts():
            if c.create or c.update or c.reactivate or c.deactivate:
                print(f"  {c.entity}: {c.create} / {c.update} / {c.reactivate} / {c.deactivate} of {c.active_before}", file=out)
        approval = store.record_approval(district, delivery_id, approved_by.strip(), approval_summary(judged.verdict))
    print(
        f"approved by {approval.approved_by} at {approval.approved_at} (recorded in the ledger); run the district's "
        f"sync again to apply it (Dagster: sync_district_roster, partition {district})",
        file=out,
    )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """The `rostersync approve` entry point (argparse namespace: district, delivery_id, by, home)."""
    return run_approve(RostersyncHome.resolve(args.home), args.district, args.delivery_id, args.by, out=sys.stdout, err=sys.stderr)
