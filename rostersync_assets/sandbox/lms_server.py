"""Serving the sandbox LMS over real HTTP: in a background thread (tests, demo) or blocking (CLI).

Tests talk to it over loopback instead of calling the app in-process, so the client's timeouts,
connection handling and retries are exercised the way they run against a real LMS. The CLI can
switch on the same faults the tests use (`fault_flags.py`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from rostersync_assets.sandbox.lms_app import SandboxFaults, create_app

_STARTUP_TIMEOUT_S = 10.0
_SHUTDOWN_TIMEOUT_S = 10.0


def _server(
    db_path: Path, token: str, host: str, port: int, faults: SandboxFaults | None
) -> uvicorn.Server:
    app = create_app(db_path, token, faults)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=int(_SHUTDOWN_TIMEOUT_S / 2),
    )
    return uvicorn.Server(config)


def _url(address: tuple) -> str:
    """The URL of a listening socket's address (port 0 asked the OS for a free port)."""
    host, port = address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def running_sandbox_lms(
    db_path: Path,
    token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: SandboxFaults | None = None,
) -> Iterator[str]:
    """Serve the sandbox LMS in a daemon thread; yields its base URL once it accepts connections."""
    server = _server(db_path, token, host, port, faults)
    thread = threading.Thread(target=server.run, name="sandbox-lms", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        yield _url(server.servers[0].sockets[0].getsockname())
    finally:
        server.should_exit = True
        thread.join(_SHUTDOWN_TIMEOUT_S)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the sandbox LMS stopped during startup (is the port in use?)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox LMS did not start within {_STARTUP_TIMEOUT_S:.0f}s")
        time.sleep(0.01)


def serve_sandbox_lms(db_path: Path, token: str, host: str, port: int, faults: SandboxFaults | None = None) -> None:
    """Serve until interrupted (Ctrl+C or SIGTERM), for `rostersync sandbox lms`.

    uvicorn runs in the main thread so that it handles the signals and shuts down gracefully;
    the socket is bound first so the printed URL carries the real port even when `port` is 0.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    print(f"sandbox LMS listening on {_url(sock.getsockname())}", flush=True)
    with sock:
        _server(db_path, token, host, sock.getsockname()[1], faults=faults).run(sockets=[sock])

