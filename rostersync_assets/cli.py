"""`rostersync ...`: the commands a district IT admin or a data engineer runs.

    rostersync generate --out DIR --students N --seed S     write a synthetic OneRoster 1.1 delivery
    rostersync demo [--home DIR] [--students N] [--nights K] [--json] [--ui]
                                                           a demo district synced end to end
    rostersync sandbox lms [--home DIR | --db PATH] --port P --token T [fault flags, e.g. --error-share 0.1]
                                                           serve the sandbox LMS (what the demo's LMS received)
    rostersync validate PATH [--json] [--profile FILE]
                                                           judge a delivery (folder or zip) as the nightly sync
                                                           would: exit 0 accepted, 1 rejected
    rostersync approve DISTRICT DELIVERY_ID --by NAME [--home DIR]
                                                           release a change set the safety checks held
                                                           (recorded in the ledger)
    rostersync ledger why --district D --sourced-id X [--json] [--home DIR | --ledger-url URL]
                                                           the chain delivery -> archive object -> file row ->
                                                           change -> LMS batch -> result, newest first
    rostersync ledger runs --district D [--json] [--home DIR | --ledger-url URL]
                                                           a district's syncs with counts per LMS status
    rostersync districts add [SLUG] --host H --username U --remote-dir D --host-key-fingerprint SHA256:...
                             (--password-env VAR | --password-secret-arn ID | --store-password) [--sync]
                                                           onboard a district (prompts in a terminal)
    rostersync districts list | test SLUG | remove SLUG | sync SLUG [SLUG ...]
                                                           registered districts; check one; unregister one;
                                                           sync several as one backfill
    rostersync replay DISTRICT DELIVERY_ID [--home DIR]    run the pipeline again on an archived delivery

Exit codes: 0 success, 1 the work failed (the output says why), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from rostersync_assets.home import INSTANCE_CONFIG, RostersyncHome
from rostersync_assets.sandbox.fault_flags import add_fault_arguments

USAGE_ERROR = 2


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_generate(args: argparse.Namespace) -> int:
    from rostersync_assets.sandbox.generator import generate_district, write_delivery

    started = time.monotonic()
    roster = generate_district(students=args.students, seed=args.seed, district=args.district)
    paths = write_delivery(roster, Path(args.out))
    _say(f"wrote {len(paths)} files to {Path(args.out).resolve()} in {time.monotonic() - started:.1f} s: {roster.summary()}")
    return 0


def _quiet_dagster() -> None:
    """Dagster's preview/beta warnings are for developers; a demo user needs only our progress lines."""
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", message=".*(preview|beta|Preview|Beta).*")


def cmd_demo(args: argparse.Namespace) -> int:
    _quiet_dagster()
    home = RostersyncHome.resolve(args.home).ensure()
    os.environ.update(home.environment())
    from rostersync_assets import demo

    say = (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else _say
    started = time.monotonic()
    try:
        demo.reset_demo_home(home)
        with demo.demo_servers(home) as (server, lms_url):
            demo.register_demo_district(home, server)
            say(f"home {home.root}: SFTP server on 127.0.0.1:{server.port}, sandbox LMS at {lms_url}")
            report = demo.run_demo(home, students=args.students, nights=args.nights, seed=args.seed, say=say)
            say(
                f"demo finished in {time.monotonic() - started:.1f} s: the LMS "
                + ("holds exactly the active records of the last delivery" if report.lms_matches_delivery
                   else f"differs from the last delivery: {report.mismatches}")
            )
            if args.ui:
                _serve_ui(home, args.ui_port, report.sensor_cursor, say)
    except demo.DemoError as error:
        print(f"rostersync demo: {error}", file=sys.stderr)
        return 1
    say(f"serve what the LMS received: rostersync sandbox lms --home {home.root} --port 8765 --token <any token>")
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    return 0 if report.ok else 1


def _serve_ui(home: RostersyncHome, port: int, sensor_cursor: str | None, say) -> None:
    """Run `dagster dev` on this home with the sensor running, until Ctrl-C (servers stay up too).

    The sensor continues from the demo's cursor, so it does not request the nights already synced.
    """
    repo = INSTANCE_CONFIG.parent
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(repo / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(command, cwd=repo, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    say(f"Dagster UI: http://127.0.0.1:{port} (asset lineage, checks and the demo's runs); Ctrl-C stops it")
    try:
        _start_sensor_when_ready(port, sensor_cursor)
        say("sftp_delivery_sensor is running: drop a new delivery into the demo folder to see a run")
        process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def _start_sensor_when_ready(port: int, cursor: str | None, timeout_s: float = 120.0) -> None:
    import requests

    url = f"http://127.0.0.1:{port}/graphql"
    deadline = time.monotonic() + timeout_s
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
    while True:
        try:
            entries = requests.post(url, json={"query": query}, timeout=5).json()["data"]["workspaceOrError"]["locationEntries"]
            break
        except (requests.RequestException, KeyError, TypeError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    selector = {"repositoryLocationName": entries[0]["name"], "repositoryName": "__repository__", "sensorName": "sftp_delivery_sensor"}
    mutations = [("mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }", {"s": selector})]
    if cursor:
        mutations.insert(0, ("mutation($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, cursor: $c) { __typename } }", {"s": selector, "c": cursor}))
    for mutation, variables in mutations:
        answer = requests.post(url, json={"query": mutation, "variables": variables}, timeout=30)
        answer.raise_for_status()
        if answer.json().get("errors"):
            raise RuntimeError(f"Dagster refused {mutation.split('{')[1].split('(')[0].strip()}: {answer.json()['errors'][0].get('message')}")


def cmd_sandbox_lms(args: argparse.Namespace) -> int:
    from rostersync_assets.sandbox.fault_flags import faults_from_arguments
    from rostersync_assets.sandbox.lms_server import serve_sandbox_lms

    db = Path(args.db) if args.db else RostersyncHome.resolve(args.home).lms_db_path
    if not db.exists():
        print(f"rostersync sandbox lms: {db} does not exist yet; it is created by `rostersync demo`", file=sys.stderr)
    db.parent.mkdir(parents=True, exist_ok=True)
    token = args.token or os.environ.get("ROSTERSYNC_LMS_TOKEN")
    if not token:
        print("rostersync sandbox lms: give --token or set ROSTERSYNC_LMS_TOKEN", file=sys.stderr)
        return USAGE_ERROR
    try:
        faults = faults_from_arguments(args)
    except ValueError as error:
        print(f"rostersync sandbox lms: {error}", file=sys.stderr)
        return USAGE_ERROR
    serve_sandbox_lms(db, token, args.host, args.port, faults)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from rostersync_assets.validate_command import run_validate

    # Findings may quote non-ASCII values: an ASCII-only terminal gets escapes, not a UnicodeEncodeError.
    sys.stdout.reconfigure(errors="backslashreplace")
    profile = Path(args.profile) if args.profile else None
    return run_validate(Path(args.path), as_json=args.json, profile_path=profile, out=sys.stdout, err=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rostersync", description="Keep an LMS in sync with districts' OneRoster rosters.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write a synthetic OneRoster 1.1 bulk delivery")
    generate.add_argument("--out", required=True, help="folder to write the delivery into")
    generate.add_argument("--students", type=int, default=2000)
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--district", default="demo-district")
    generate.set_defaults(run=cmd_generate)

    demo = commands.add_parser("demo", help="sync a generated district end to end on embedded defaults")
    demo.add_argument("--home", help="home folder (default: $ROSTERSYNC_HOME or ./.rostersync)")
    demo.add_argument("--students", type=int, default=2000)
    demo.add_argument("--nights", type=int, default=2)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--json", action="store_true", help="progress to stderr, a JSON summary as the last line of stdout")
    demo.add_argument("--ui", action="store_true", help="afterwards serve the Dagster UI with the sensor running")
    demo.add_argument("--ui-port", type=int, default=3000)
    demo.set_defaults(run=cmd_demo)

    sandbox = commands.add_parser("sandbox", help="the sandbox servers").add_subparsers(dest="server", required=True)
    lms = sandbox.add_parser("lms", help="serve the sandbox LMS over HTTP")
    where = lms.add_mutually_exclusive_group()
    where.add_argument("--home", help="home folder whose sandbox LMS database to serve")
    where.add_argument("--db", help="the sandbox LMS SQLite database")
    lms.add_argument("--host", default="127.0.0.1")
    lms.add_argument("--port", type=int, default=8765)
    lms.add_argument("--token", help="bearer token clients must send (default: $ROSTERSYNC_LMS_TOKEN)")
    add_fault_arguments(lms)
    lms.set_defaults(run=cmd_sandbox_lms)

    validate = commands.add_parser("validate", help="check a OneRoster delivery and explain what to fix")
    validate.add_argument("path", metavar="PATH", help="delivery folder or .zip file")
    validate.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    validate.add_argument("--profile", metavar="FILE", help="district profile (YAML) to read the delivery with")
    validate.set_defaults(run=cmd_validate)

    from rostersync_assets.approve_command import cmd_approve

    approve = commands.add_parser("approve", help="release a change set the safety checks held, naming its delivery")
    approve.add_argument("district", metavar="DISTRICT", help="the district's slug")
    approve.add_argument("delivery_id", metavar="DELIVERY_ID", help="the held delivery (shown by the failed safety checks)")
    approve.add_argument("--by", required=True, help="who approves (recorded in the ledger)")
    approve.add_argument("--home", help="home folder (default: $ROSTERSYNC_HOME or ./.rostersync)")
    approve.set_defaults(run=cmd_approve)

    from rostersync_assets.ledger_command import cmd_ledger

    ledger = commands.add_parser("ledger", help="trace LMS writes back to delivery rows; list syncs")
    ledger_actions = ledger.add_subparsers(dest="action", required=True)
    why = ledger_actions.add_parser("why", help="the chain delivery -> archive -> file row -> change -> LMS batch -> result")
    why.add_argument("--sourced-id", required=True, help="the record's sourcedId")
    ledger_actions.add_parser("runs", help="the district's syncs with counts per LMS status")
    for action in ledger_actions.choices.values():
        action.add_argument("--district", required=True, help="the district's slug")
        action.add_argument("--json", action="store_true", help="print one JSON document")
        action.add_argument("--home", help="home folder whose ledger to read (default: $ROSTERSYNC_HOME or ./.rostersync)")
        action.add_argument("--ledger-url", help="SQLAlchemy URL of the ledger (default: $ROSTERSYNC_LEDGER_URL, else the home's)")
        action.set_defaults(run=cmd_ledger)

    from rostersync_assets.districts_command import add_parser as add_districts_parser

    add_districts_parser(commands)

    from rostersync_assets.replay_command import add_parser as add_replay_parser

    add_replay_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("students", "nights"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name} must be at least 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
