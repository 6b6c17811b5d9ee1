"""`rostersync districts add|list|test|remove|sync`: onboarding a district in minutes, from one shell.

`add` proves everything before it saves anything: the slug, the server's host key (its fingerprint
confirmed by the admin or given with `--host-key-fingerprint`; never accepted on trust), the login,
the folder and a delivery the nightly rules accept. Only then does it store the credential (as a
reference: an environment variable, an AWS Secrets Manager secret, or an entry of the home's
encrypted secrets file), save the registry and register the district's partition on the home's
Dagster instance; `--sync` then runs the onboarding sync as a backfill (see onboarding_runs.py).
`sync A B C` onboards several registered districts as ONE backfill.

Flags, or prompts for the missing ones when stdin is a terminal. No secret value is ever printed.
Exit codes: 0 done, 1 refused or failed (the output says why), 2 usage error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from rostersync_assets.home import RostersyncHome

if TYPE_CHECKING:  # imported lazily at run time: the CLI builds every parser, these pull in paramiko and pandas
    from rostersync_assets.connectors.sftp import SftpCredentials
    from rostersync_assets.registry import District, SftpSource

PROG = "rostersync districts"
OK, FAILED, USAGE_ERROR = 0, 1, 2
LMS_ENV = ("ROSTERSYNC_LMS_URL", "ROSTERSYNC_LMS_TOKEN")


class UsageError(Exception):
    """A flag is missing or malformed and there is no terminal to ask; the message names it."""


class Refused(Exception):
    """A check failed (host key, login, delivery): nothing was saved; the message says what to do."""


@dataclass
class Console:
    """Where the command talks to the admin: prompts only when stdin is a terminal."""

    out: TextIO
    err: TextIO
    interactive: bool
    ask: Callable[[str], str] = input
    ask_secret: Callable[[str], str] = getpass.getpass

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def value(self, current: str | None, prompt: str, flag: str) -> str:
        """The flag's value, else the admin's answer, else a usage error naming the flag."""
        if current:
            return current
        if not self.interactive:
            raise UsageError(f"{flag} is required (or run in a terminal to be asked)")
        answer = self.ask(f"{prompt}: ").strip()
        if not answer:
            raise UsageError(f"{flag} is required")
        return answer

    def confirm(self, question: str) -> bool:
        return self.interactive and self.ask(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_districts(args: argparse.Namespace) -> int:
    """Entry point of every `districts` action (the parser is built in cli.py)."""
    from rostersync_assets.cli import _quiet_dagster

    _quiet_dagster()
    return run_action(args, Console(sys.stdout, sys.stderr, interactive=sys.stdin.isatty()))


def run_action(args: argparse.Namespace, console: Console) -> int:
    """Run one `districts` action talking through `console`; returns the exit code."""
    home = RostersyncHome.resolve(args.home).ensure()
    os.environ.update(home.environment())
    actions = {"add": _add, "list": _list, "test": _test, "remove": _remove, "sync": _sync}
    try:
        return actions[args.action](args, home, console)
    except UsageError as error:
        print(f"{PROG} {args.action}: {error}", file=console.err)
        return USAGE_ERROR
    except Refused as error:
        print(f"{PROG} {args.action}: {error}", file=console.err)
        return FAILED


def _add(args: argparse.Namespace, home: RostersyncHome, console: Console) -> int:
    from rostersync_assets.connectors.sftp import SftpError, fetch_host_key, host_key_fingerprint
    from rostersync_assets.onboarding import FingerprintRefused, check_fingerprint, probe_folder
    from rostersync_assets.registry import District, DistrictRegistry, RegistryError, SftpSource, validate_slug

    if args.sync:
        _require_lms_settings()  # before anything is checked or saved, not after
    registry = DistrictRegistry.load(home.registry_path)
    try:
        slug = validate_slug(console.value(args.slug, "district slug (e.g. lincoln-usd)", "SLUG"))
    except RegistryError as error:
        raise UsageError(str(error)) from None
    if slug in registry.districts:
        raise Refused(f"district {slug} is already registered in {home.registry_path} (remove it first to re-onboard)")
    host = console.value(args.host, "SFTP host", "--host")
    username = console.value(args.username, "SFTP username", "--username")
    remote_dir = console.value(args.remote_dir, "remote folder (e.g. /outgoing)", "--remote-dir")
    method = _credential_method(args, console)

    console.say(f"district {slug}: fetching the host key of {host}:{args.port}")
    try:
        offered = fetch_host_key(host, args.port)
    except SftpError as error:
        raise Refused(f"district {slug}: {error}") from None
    fingerprint = host_key_fingerprint(offered)
    console.say(f"district {slug}: {host}:{args.port} offers {offered.split()[0]} {fingerprint}")
    if args.host_key_fingerprint:
        try:
            check_fingerprint(offered, args.host_key_fingerprint, host=host, port=args.port)
        except FingerprintRefused as error:
            raise Refused(f"district {slug}: {error}") from None
        console.say(f"district {slug}: fingerprint matches --host-key-fingerprint; pinning it")
    elif not console.interactive:
        raise UsageError(
            f"--host-key-fingerprint is required without a terminal: the server offers {fingerprint}; "
            "confirm it with the district out of band and pass it"
        )
    elif not console.confirm(f"Is {fingerprint} the fingerprint the district gave you for {host}?"):
        raise Refused(f"district {slug}: host key not confirmed; nothing was saved")

    secret_value, reference = _credential(method, args, slug, console)
    source = SftpSource(
        host=host, port=args.port, username=username, remote_dir=remote_dir, host_key=offered,
        ready_marker=args.ready_marker, **reference,
    )
    district = District(slug=slug, name=args.name or slug, lms_tenant=args.lms_tenant or slug, sftp=source)
    try:
        registry.with_district(district)  # refuses a tenant another district already uses
    except RegistryError as error:
        raise UsageError(str(error)) from None

    console.say(f"district {slug}: logging in as {username} and looking at {remote_dir}")
    credentials = _credentials_for(source, method, secret_value)
    try:
        readiness = probe_folder(district, credentials)
    except (SftpError, OSError) as error:
        raise Refused(f"district {slug}: {error}; nothing was saved") from None
    console.say(f"district {slug}: {readiness.describe()}")
    if readiness.complete and not readiness.accepted:
        raise Refused(
            f"district {slug}: the delivery in {remote_dir} is rejected by the nightly rules; nothing was saved. "
            f"See what to fix with `rostersync validate` on a copy of the export"
        )

    if method == "store":
        _store_secret(slug, secret_value)
        console.say(f"district {slug}: password stored encrypted in {home.root / 'secrets.enc.json'}")
    DistrictRegistry.load(home.registry_path).with_district(district).save(home.registry_path)
    console.say(f"district {slug}: registered in {home.registry_path} (host key {fingerprint} pinned)")
    _register_partition(home, slug, console)
    if not args.sync:
        console.say(f"next: `rostersync districts sync {slug} --home {home.root}`, or turn on sftp_delivery_sensor")
        return OK
    if not readiness.complete:
        console.say(f"district {slug}: no complete delivery to sync yet; the sensor syncs it once one arrives")
        return FAILED
    return _run_backfill(home, [(slug, readiness.listing)], console, title=f"onboarding {slug}")


def _list(args: argparse.Namespace, home: RostersyncHome, console: Console) -> int:
    from rostersync_assets.connectors.sftp import host_key_fingerprint
    from rostersync_assets.registry import DistrictRegistry

    rows = []
    last = _last_syncs(home)
    for slug, district in sorted(DistrictRegistry.load(home.registry_path).districts.items()):
        if district.sftp is not None:
            source = "sftp"
            where = f"{district.sftp.username}@{district.sftp.host}:{district.sftp.port}{district.sftp.remote_dir}"
            fingerprint = host_key_fingerprint(district.sftp.host_key)
            secrets = ", ".join(f"{name}: {ref.describe()}" for name, ref in district.sftp.secret_refs().items())
        else:
            source, where, fingerprint, secrets = "rest", district.rest.describe() if district.rest else "", "", ""
        rows.append({
            "slug": slug, "source": source, "where": where, "host_key": fingerprint,
            "credentials": secrets, "last_delivery_synced": last.get(slug, ""),
        })
    if args.json:
        console.say(json.dumps(rows))
    elif not rows:
        console.say(f"no districts registered in {home.registry_path} (add one with `rostersync districts add`)")
    for row in rows if not args.json else []:
        console.say(
            f"{row['slug']}  {row['source']}  {row['where']}  {row['host_key'] or '-'}  "
            f"last synced: {row['last_delivery_synced'] or 'never'}  ({row['credentials']})"
        )
    return OK


def _test(args: argparse.Namespace, home: RostersyncHome, console: Console) -> int:
    from rostersync_assets.connectors.sftp import HostKeyMismatch, SftpError
    from rostersync_assets.onboarding import probe_folder
    from rostersync_assets.registry import RegistryError

    district = _registered(home, args.slug)
    if district.sftp is None:
        raise UsageError(f"district {district.slug} is pulled over OneRoster REST; `districts test` checks SFTP districts")
    try:
        readiness = probe_folder(district, district.sftp.credentials())
    except HostKeyMismatch as error:
        raise Refused(f"district {district.slug}: {error}") from None
    except (RegistryError, SftpError, OSError) as error:
        raise Refused(f"district {district.slug}: {error}") from None
    console.say(f"district {district.slug}: host key matches the pin; login and listing OK")
    console.say(f"district {district.slug}: {readiness.describe()}")
    return OK if readiness.complete and readiness.accepted else FAILED


def _remove(args: argparse.Namespace, home: RostersyncHome, console: Console) -> int:
    import dagster as dg

    from rostersync_assets.defs.partitions import districts_partitions
    from rostersync_assets.registry import DistrictRegistry
    from rostersync_assets.secret_refs import SecretsFile, secrets_file_path

    district = _registered(home, args.slug)
    registry = DistrictRegistry.load(home.registry_path)
    DistrictRegistry({s: d for s, d in registry.districts.items() if s != district.slug}).save(home.registry_path)
    console.say(f"district {district.slug}: removed from {home.registry_path}")
    stored = [ref for ref in (district.sftp.secret_refs().values() if district.sftp else []) if ref.kind == "file"]
    if stored:
        store = SecretsFile(secrets_file_path(os.environ), None)  # removing an entry needs no key
        for ref in stored:
            store.remove(ref.name)
        console.say(f"district {district.slug}: its stored credential was deleted from the secrets file")
    with dg.DagsterInstance.get() as instance:
        if instance.has_dynamic_partition(districts_partitions.name, district.slug):
            instance.delete_dynamic_partition(districts_partitions.name, district.slug)
    console.say(
        f"district {district.slug}: partition unregistered; its archived deliveries ({home.archive_dir}), "
        "ledger entries and past runs are kept"
    )
    return OK


def _sync(args: argparse.Namespace, home: RostersyncHome, console: Console) -> int:
    from rostersync_assets.connectors.delivery import listing_fingerprint
    from rostersync_assets.connectors.sftp import SftpConnector, SftpError
    from rostersync_assets.registry import RegistryError

    runs: list[tuple[str, str | None]] = []
    for slug in dict.fromkeys(args.slugs):
        district = _registered(home, slug)
        _register_partition(home, slug, console)
        if district.sftp is None:
            runs.append((slug, None))
            continue
        try:
            with SftpConnector(district.sftp.endpoint(), district.sftp.credentials()) as connector:
                runs.append((slug, listing_fingerprint(connector.list_files())))
        except (RegistryError, SftpError, OSError) as error:
            raise Refused(f"district {slug}: {error}; no run was launched") from None
    return _run_backfill(home, runs, console, title="onboarding " + ", ".join(slug for slug, _ in runs))


def _run_backfill(home: RostersyncHome, runs: list[tuple[str, str | None]], console: Console, *, title: str) -> int:
    """Run the districts' syncs as one backfill and end with what a person checks next."""
    import dagster as dg

    from rostersync_assets.definitions import ENV_VAR, build_definitions
    from rostersync_assets.defs.ingest.delivery_runs import delivery_run_request
    from rostersync_assets.defs.partitions import DISTRICT_TAG
    from rostersync_assets.defs.resources import build_resources
    from rostersync_assets.onboarding_runs import run_as_backfill

    _require_lms_settings()
    defs = build_definitions(build_resources(os.environ.get(ENV_VAR, "local"), home))
    tagged = [
        (slug, dict(delivery_run_request(slug, listing, trigger="onboarding").tags) if listing else {DISTRICT_TAG: slug})
        for slug, listing in runs
    ]
    with dg.DagsterInstance.get() as instance:
        outcome = run_as_backfill(instance, defs, tagged, title=title, say=console.say)
    synced = [r for r in outcome.runs if r.success]
    console.say(
        f"backfill {outcome.backfill_id}: {len(synced)} of {len(outcome.runs)} district(s) synced; "
        f"{sum(r.created for r in synced)} records created, {sum(r.failed for r in outcome.runs)} failed in the LMS"
    )
    for run in outcome.runs:
        if not run.success:
            console.say(f"  {run.district}: failed checks: {', '.join(run.failed_checks) or 'none (a step failed)'}")
    console.say(
        f"see it in the Dagster UI (DAGSTER_HOME={home.dagster_home} dagster dev -w workspace.yaml): "
        f"Overview > Backfills > {outcome.backfill_id}, and each run's checks under Assets"
    )
    return OK if outcome.ok else FAILED


def _require_lms_settings() -> None:
    missing = [name for name in LMS_ENV if not os.environ.get(name)]
    if missing:
        raise UsageError(f"set {' and '.join(missing)} (the LMS the sync writes to) before syncing")


def _credential_method(args: argparse.Namespace, console: Console) -> str:
    """env | aws | store | key-env, from the flags, else asked."""
    chosen = [name for name, given in (
        ("env", args.password_env), ("aws", args.password_secret_arn), ("store", args.store_password),
        ("key-env", args.private_key_env),
    ) if given]
    if len(chosen) > 1:
        raise UsageError("give one of --password-env, --password-secret-arn, --store-password, --private-key-env")
    if chosen:
        return chosen[0]
    if not console.interactive:
        raise UsageError("give the credential: --password-env VAR, --password-secret-arn ID, --store-password or --private-key-env VAR")
    answer = console.ask("password kept in [1] an environment variable, [2] AWS Secrets Manager, [3] the encrypted secrets file: ").strip()
    methods = {"1": "env", "2": "aws", "3": "store"}
    if answer not in methods:
        raise UsageError("answer 1, 2 or 3")
    if methods[answer] == "env":
        args.password_env = console.value(None, "environment variable holding the password", "--password-env")
    elif methods[answer] == "aws":
        args.password_secret_arn = console.value(None, "secret id or ARN", "--password-secret-arn")
    return methods[answer]


def _credential(method: str, args: argparse.Namespace, slug: str, console: Console) -> tuple[str | None, dict[str, object]]:
    """(the password typed or piped for `store`, else None; the SftpSource fields naming the secret)."""
    from rostersync_assets.secret_refs import SecretRef, fernet_key

    if method == "env":
        return None, {"password_env": args.password_env}
    if method == "key-env":
        return None, {"private_key_env": args.private_key_env}
    if method == "aws":
        return None, {"password_secret": SecretRef("aws", args.password_secret_arn, args.secret_json_key)}
    try:
        fernet_key(os.environ)  # before asking for the password: say at once if it cannot be stored
    except ValueError as error:
        raise UsageError(str(error)) from None
    value = console.ask_secret(f"SFTP password for {slug}: ") if console.interactive else sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError("--store-password needs the password (typed, or as one line on stdin)")
    return value, {"password_secret": SecretRef("file", _secret_entry(slug))}


def _credentials_for(source: SftpSource, method: str, typed: str | None) -> SftpCredentials:
    """The credentials to try now: the typed password (not stored until the checks pass) or the reference's."""
    from rostersync_assets.connectors.sftp import SftpCredentials
    from rostersync_assets.registry import RegistryError

    if method == "store":
        return SftpCredentials(password=typed)
    try:
        return source.credentials()
    except RegistryError as error:
        raise Refused(str(error)) from None


def _secret_entry(slug: str) -> str:
    return f"sftp/{slug}/password"


def _store_secret(slug: str, value: str | None) -> None:
    from rostersync_assets.secret_refs import SecretsFile, fernet_key, secrets_file_path

    assert value is not None
    SecretsFile(secrets_file_path(os.environ), fernet_key(os.environ)).put(_secret_entry(slug), value)


def _register_partition(home: RostersyncHome, slug: str, console: Console) -> None:
    import dagster as dg

    from rostersync_assets.onboarding_runs import register_partition

    with dg.DagsterInstance.get() as instance:
        added = register_partition(instance, slug)
    console.say(f"district {slug}: partition {'registered' if added else 'already registered'} on {home.dagster_home}")


def _registered(home: RostersyncHome, slug: str) -> District:
    from rostersync_assets.registry import DistrictRegistry, RegistryError

    try:
        return DistrictRegistry.load(home.registry_path).get(slug)
    except RegistryError as error:
        raise UsageError(f"{error} in {home.registry_path}") from None


def _last_syncs(home: RostersyncHome) -> dict[str, str]:
    """slug -> the newest delivery the ledger shows synced (empty before the first sync)."""
    from rostersync_assets.ledger_command import LedgerUnavailable, open_ledger
    from rostersync_assets.registry import DistrictRegistry

    try:
        ledger = open_ledger(str(home.root), None)
    except LedgerUnavailable:
        return {}
    with ledger as store:
        found = {}
        for slug in DistrictRegistry.load(home.registry_path).districts:
            runs = store.runs(slug)
            if runs:
                found[slug] = f"{runs[0]['delivery_id']} at {runs[0]['finished_at']}"
        return found


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The `districts` subcommands (called from cli.build_parser)."""
    districts = commands.add_parser("districts", help="onboard, list, test, remove and sync districts")
    actions = districts.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="check a district's SFTP folder and delivery, then register it")
    add.add_argument("slug", metavar="SLUG", nargs="?", help="the district's slug (partition key), e.g. lincoln-usd")
    add.add_argument("--name", help="display name (default: the slug)")
    add.add_argument("--lms-tenant", help="the district's LMS tenant (default: the slug)")
    add.add_argument("--host", help="SFTP host")
    add.add_argument("--port", type=int, default=22)
    add.add_argument("--username", help="SFTP login")
    add.add_argument("--remote-dir", help="folder the district drops its files in")
    add.add_argument("--ready-marker", help="file the district writes last to mark a delivery complete")
    add.add_argument("--host-key-fingerprint", metavar="SHA256:...", help="the fingerprint the district gave you (required without a terminal)")
    add.add_argument("--password-env", metavar="VAR", help="environment variable holding the SFTP password")
    add.add_argument("--password-secret-arn", metavar="ID", help="AWS Secrets Manager secret id or ARN holding the password")
    add.add_argument("--secret-json-key", metavar="KEY", help="with --password-secret-arn: the key inside the secret's JSON")
    add.add_argument("--store-password", action="store_true", help="store the password (typed, or one line on stdin) encrypted with $ROSTERSYNC_SECRETS_KEY")
    add.add_argument("--private-key-env", metavar="VAR", help="environment variable holding an SSH private key")
    add.add_argument("--sync", action="store_true", help="then run the onboarding sync and wait for it")
    actions.add_parser("list", help="registered districts: source, host, pinned fingerprint, last delivery synced").add_argument(
        "--json", action="store_true", help="print one JSON document")
    actions.add_parser("test", help="connect, check the pinned host key, list, judge the delivery; writes nothing").add_argument(
        "slug", metavar="SLUG")
    actions.add_parser("remove", help="unregister a district (archive, ledger and runs are kept)").add_argument("slug", metavar="SLUG")
    actions.add_parser("sync", help="sync registered districts now, as one backfill").add_argument(
        "slugs", metavar="SLUG", nargs="+")
    for action in actions.choices.values():
        action.add_argument("--home", help="home folder (default: $ROSTERSYNC_HOME or ./.rostersync)")
        action.set_defaults(run=cmd_districts)
