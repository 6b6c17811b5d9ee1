"""Time sftp_delivery_sensor ticks over hundreds of districts on loopback SFTP servers.

Every district but two logs in to the in-process asyncssh sandbox server (one login and chroot per
district), run in a separate process so its CPU does not share the sensor's GIL; one district points
at a port that accepts TCP and never sends the SSH banner (a hung server), one pins a host key the
server does not hold. The sensor is evaluated as the daemon does (through the definitions, with
instance_ref): tick 1 sees every delivery once, tick 2 finds them unchanged and requests one run per
district. Run from the repository root:

    .venv/bin/python -m benchmarks.sensor_tick --districts 500 --workers 4,8,16

Prints the cost of one look (connect, key exchange, login, list) taken serially; per worker count,
both ticks' wall time and the CPU the sensor process spent, runs requested, and the listing phase
alone (the rest of tick 2 is Dagster resolving the run requests); the failing districts named with
their reason (tick 1's skip reason; the sensor's log lines on stderr); peak RSS; and the CPU the
server process spent.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import secrets
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

import dagster as dg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from benchmarks._measure import peak_rss_mib
from rostersync_assets.connectors.parallel_listing import ListingSettings, LookFailed, look_in_parallel
from rostersync_assets.definitions import build_definitions
from rostersync_assets.defs.ingest.delivery_runs import list_folder
from rostersync_assets.defs.ingest.sensors import sftp_delivery_sensor
from rostersync_assets.defs.partitions import districts_partitions
from rostersync_assets.defs.resources import build_resources
from rostersync_assets.home import RostersyncHome
from rostersync_assets.registry import District, DistrictRegistry, SftpSource
from rostersync_assets.sandbox.generator import generate_district, write_delivery
from rostersync_assets.sandbox.sftp_server import running_sftp_server

PASSWORD_ENV = "BENCH_SFTP_PASSWORD"
REMOTE_DIR = "/outgoing"


def _serve(root: Path, usernames: list[str], password: str, key_path: Path, conn: Connection) -> None:
    """The server process: serve every login until told to stop, then report the CPU it spent."""
    with running_sftp_server(root, dict.fromkeys(usernames, password), host_key_path=key_path) as handle:
        conn.send((handle.port, handle.host_key))
        conn.recv()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send(usage.ru_utime + usage.ru_stime)


@contextmanager
def _server_process(root: Path, usernames: list[str], password: str, key_path: Path) -> Iterator[tuple[int, str, Connection]]:
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(root, usernames, password, key_path, child), daemon=True
    )
    process.start()
    try:
        port, host_key = parent.recv()
        yield port, host_key, parent
    finally:
        if process.is_alive():
            parent.send("stop")
            print(f"server process CPU over the whole benchmark: {parent.recv():.1f} s")
        process.join(timeout=10)


@contextmanager
def _hung_port() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake while nobody ever speaks SSH."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def _other_host_key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _district(slug: str, port: int, host_key: str) -> District:
    source = SftpSource("127.0.0.1", port, slug, REMOTE_DIR, host_key, password_env=PASSWORD_ENV)
    return District(slug=slug, name=slug, lms_tenant=slug, sftp=source)


def _publish(template: Path, root: Path, usernames: list[str]) -> None:
    """The same small delivery in every district's folder (hard links: listing is what is measured)."""
    for username in usernames:
        folder = root / username / REMOTE_DIR.lstrip("/")
        folder.mkdir(parents=True)
        for path in template.iterdir():
            os.link(path, folder / path.name)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tick(home: RostersyncHome, instance: dg.DagsterInstance, cursor: str | None) -> tuple[float, float, dg.SensorResult]:
    defs = build_definitions(build_resources("local", home))
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        instance_ref=instance.get_ref(),
        resources=build_resources("local", home),
    ) as context:
        started, cpu = time.perf_counter(), _cpu_s()
        result = defs.resolve_sensor_def(sftp_delivery_sensor.name).evaluate_tick(context)
        return time.perf_counter() - started, _cpu_s() - cpu, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--districts", type=int, default=500, help="districts in all, including the two failing ones")
    parser.add_argument("--workers", default="8", help="comma-separated worker counts to time (ROSTERSYNC_LISTING_WORKERS)")
    parser.add_argument("--timeout", type=float, default=ListingSettings().timeout_s, help="per-district timeout, seconds")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # the hung server's banner timeout, once per tick

    password = secrets.token_urlsafe(16)
    os.environ.update(
        {PASSWORD_ENV: password, "ROSTERSYNC_LMS_URL": "http://127.0.0.1:9", "ROSTERSYNC_LMS_TOKEN": "unused",
         "ROSTERSYNC_LISTING_TIMEOUT_S": str(args.timeout)}
    )
    work = Path(tempfile.mkdtemp(prefix="sensor-tick-"))
    try:
        usernames = [f"district-{i:04d}" for i in range(args.districts - 2)]
        template = work / "template"
        write_delivery(generate_district(students=20, seed=1, district="template"), template)
        root = work / "sftp-root"
        _publish(template, root, usernames)
        home = RostersyncHome(work / "home").ensure()
        with _server_process(root, usernames, password, work / "host-key") as (port, host_key, _), _hung_port() as hung:
            districts = [_district(u, port, host_key) for u in usernames]
            districts.append(_district("hung-server-isd", hung, host_key))
            districts.append(_district("wrong-key-isd", port, _other_host_key()))
            DistrictRegistry({d.slug: d for d in districts}).save(home.registry_path)
            print(f"{args.districts} districts: {len(usernames)} on one asyncssh server in its own process, "
                  f"1 hung (TCP accepted, no banner), 1 pinned to a key the server does not hold; "
                  f"timeout {args.timeout:g} s; {os.cpu_count()} CPU(s)")

            started = time.perf_counter()
            DistrictRegistry.load(home.registry_path)
            print(f"registry load (YAML, {args.districts} districts): {time.perf_counter() - started:.2f} s")
            settings = ListingSettings.from_environ(os.environ)
            samples = districts[:20]
            started, cpu = time.perf_counter(), _cpu_s()
            for district in samples:
                list_folder(district, settings)
            serial = (time.perf_counter() - started) / len(samples)
            print(f"one look, serial (mean of {len(samples)}): {serial * 1000:.1f} ms wall, "
                  f"{(_cpu_s() - cpu) / len(samples) * 1000:.1f} ms sensor-process CPU")

            for workers in [int(w) for w in args.workers.split(",")]:
                os.environ["ROSTERSYNC_LISTING_WORKERS"] = str(workers)
                settings = ListingSettings.from_environ(os.environ)
                with dg.instance_for_test() as instance:
                    instance.add_dynamic_partitions(districts_partitions.name, [d.slug for d in districts])
                    wall1, cpu1, first = _tick(home, instance, None)
                    wall2, cpu2, second = _tick(home, instance, first.cursor)
                started = time.perf_counter()
                looks = look_in_parallel(
                    {d.slug: d for d in districts}, lambda d: list_folder(d, settings), workers=workers, budget_s=settings.budget_s
                )
                listing = time.perf_counter() - started
                print(f"workers={workers:>3}: tick 1 {wall1:6.2f} s (process CPU {cpu1:5.1f} s, {len(first.run_requests)} runs), "
                      f"tick 2 {wall2:6.2f} s (process CPU {cpu2:5.1f} s, {len(second.run_requests)} runs requested); "
                      f"the listing alone {listing:.2f} s ({sum(isinstance(v, LookFailed) for v in looks.values())} failed); "
                      f"cursor {len(second.cursor or ''):,} bytes")
            print(f"tick 1 skip reason: {first.skip_message}")
            print(f"peak RSS (sensor process): {peak_rss_mib():,.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
