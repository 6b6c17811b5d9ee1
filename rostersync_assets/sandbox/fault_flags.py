"""The `rostersync sandbox lms` flags that switch on the sandbox LMS's faults.

Kept apart from the server module so that building the CLI's parser imports neither uvicorn nor
Starlette.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rostersync_assets.sandbox.lms_app import SandboxFaults


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rostersync sandbox lms` flags that switch on SandboxFaults (all off by default)."""
    faults = parser.add_argument_group("faults", "misbehaviour to exercise a client (shares are 0..1)")
    faults.add_argument("--latency", type=float, default=0.0, metavar="S", help="seconds added to every tenant request")
    faults.add_argument("--error-share", type=float, default=0.0, metavar="P", help="batch requests answered 503")
    faults.add_argument("--throttle-share", type=float, default=0.0, metavar="P", help="batch requests answered 429")
    faults.add_argument("--retry-after", type=int, default=1, metavar="S", help="the Retry-After of a 429 (default 1)")
    faults.add_argument("--drop-before-share", type=float, default=0.0, metavar="P",
                        help="batch requests whose connection is closed unanswered, nothing applied")
    faults.add_argument("--drop-after-share", type=float, default=0.0, metavar="P",
                        help="batch requests applied, then their connection closed unanswered")
    faults.add_argument("--stall-share", type=float, default=0.0, metavar="P",
                        help="batch requests held --stall seconds before being applied (client timeouts)")
    faults.add_argument("--stall", type=float, default=2.0, metavar="S", help="how long a stalled request is held (default 2)")
    faults.add_argument("--reject-share", type=float, default=0.0, metavar="P", help="records answered with a per-record error")
    faults.add_argument("--reject-id", action="append", default=[], metavar="ID", help="a sourcedId always rejected (repeatable)")
    faults.add_argument("--fault-seed", type=int, default=0, metavar="N", help="seed of the fault draws (default 0)")


def faults_from_arguments(args: argparse.Namespace) -> SandboxFaults:
    """SandboxFaults from the flags of `add_fault_arguments`; a bad share is a ValueError."""
    from rostersync_assets.sandbox.lms_app import SandboxFaults

    return SandboxFaults(
        latency_s=args.latency,
        retry_after_s=args.retry_after,
        error_share=args.error_share,
        throttle_share=args.throttle_share,
        drop_before_share=args.drop_before_share,
        drop_after_share=args.drop_after_share,
        stall_share=args.stall_share,
        stall_s=args.stall,
        reject_share=args.reject_share,
        reject_ids=frozenset(args.reject_id),
        seed=args.fault_seed,
    )
