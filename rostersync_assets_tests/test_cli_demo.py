"""The main job as a user runs it: `rostersync demo --json`, then `rostersync sandbox lms` on the same home."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from rostersync_assets.sandbox.generator import generate_district, next_night

CLI = [sys.executable, "-m", "rostersync_assets.cli"]
STUDENTS, NIGHTS, SEED = 300, 2, 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_syncs_night_one_fully_and_night_two_as_generated_then_the_lms_serves_it(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROSTERSYNC_", "DAGSTER_"))}
    done = subprocess.run(
        [*CLI, "demo", "--json", "--home", str(home), "--students", str(STUDENTS), "--nights", str(NIGHTS), "--seed", str(SEED)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = summary["nights"]
    roster = generate_district(students=STUDENTS, seed=SEED, district="demo-district")
    tomorrow, expected = next_night(roster, seed=SEED, night=2)
    assert summary["district"] == "demo-district" and summary["lms_matches_delivery"]
    assert first["created"] == sum(len(t) for t in roster.tables.values())
    assert (first["updated"], first["deactivated"], first["failed"]) == (0, 0, 0)
    assert {k: second[k] for k in ("created", "updated", "deactivated")} == expected.counts()
    assert second["failed"] == 0 and first["delivery_id"] != second["delivery_id"]
    assert "night 2" in done.stderr  # progress goes to stderr with --json

    port, token = free_port(), "demo-token"
    server = subprocess.Popen([*CLI, "sandbox", "lms", "--home", str(home), "--port", str(port), "--token", token], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/tenants/{summary['tenant']}/users"
        deadline = time.monotonic() + 30
        while True:
            try:
                first_page = requests.get(url, params={"limit": 1000}, headers={"Authorization": f"Bearer {token}"}, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "sandbox LMS did not start"
                time.sleep(0.2)
        items, cursor = first_page.json()["items"], first_page.json()["next_cursor"]
        while cursor:
            page = requests.get(url, params={"limit": 1000, "cursor": cursor}, headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
            items, cursor = items + page["items"], page["next_cursor"]
        assert {i["sourcedId"] for i in items if i["active"]} == set(tomorrow.tables["users"]["sourcedId"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_generate_writes_a_complete_delivery(tmp_path):
    done = subprocess.run([*CLI, "generate", "--out", str(tmp_path), "--students", "50", "--seed", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in Path(tmp_path).iterdir()} == {
        "manifest.csv", "orgs.csv", "academicSessions.csv", "courses.csv", "classes.csv", "users.csv", "enrollments.csv", "demographics.csv"
    }
    assert "users" in done.stdout


def test_usage_errors_exit_2(tmp_path):
    done = subprocess.run([*CLI, "demo", "--students", "0", "--home", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--students" in done.stderr
