"""The SFTP connector against the in-process sandbox and a real OpenSSH sshd.

What matters for a district feed: every login method works on both, only the pinned server is
trusted, transient failures are retried with backoff (permanent ones are not), files arrive whole
with a checksum even across a dropped connection, and no secret ever reaches a message. Isolation
between districts and hostile names are in test_security.py.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from rostersync_assets.connectors.sftp import (
    HostKeyMismatch,
    RemoteFile,
    RetryPolicy,
    SftpConnector,
    SftpCredentials,
    SftpEndpoint,
    SftpError,
    SftpLoginRefused,
    SftpUnavailable,
    UnsafeFileName,
    fetch_host_key,
    host_key_fingerprint,
    parse_public_key_line,
    validate_file_name,
)
from rostersync_assets.sandbox.sftp_server import running_sftp_server
from rostersync_assets_tests.fixtures.sftp import AUTH_METHODS, SftpTestServer, free_loopback_port

# Fast retries for tests that exercise them; the waits are still real sleeps.
QUICK_RETRY = RetryPolicy(attempts=3, backoff_s=0.1)


@pytest.fixture(params=["sftp_server", "openssh_server"])
def server(request: pytest.FixtureRequest) -> SftpTestServer:
    """Each test using this runs against both the sandbox and OpenSSH."""
    return request.getfixturevalue(request.param)


def _ed25519_private() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _public_line(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _private_text(
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, fmt: serialization.PrivateFormat
) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    ).decode()


def test_list_files_reports_regular_files_sorted(server: SftpTestServer) -> None:
    (server.drop_dir / "users.csv").write_bytes(b"sourcedId\n" * 3)
    (server.drop_dir / "classes.csv").write_bytes(b"")
    (server.drop_dir / "archive").mkdir()
    (server.drop_dir / "latest.csv").symlink_to("users.csv")

    with SftpConnector(server.endpoint(), server.credentials) as sftp:
        files = sftp.list_files()

    assert files == [
        RemoteFile("classes.csv", 0, int(os.stat(server.drop_dir / "classes.csv").st_mtime)),
        RemoteFile("users.csv", 30, int(os.stat(server.drop_dir / "users.csv").st_mtime)),
    ]


def test_download_returns_size_and_sha256(server: SftpTestServer, tmp_path: Path) -> None:
    payload = secrets.token_bytes(300_000)  # several chunks and prefetch requests
    (server.drop_dir / "users.csv").write_bytes(payload)
    dest = tmp_path / "downloads" / "users.csv"

    with SftpConnector(server.endpoint(), server.credentials) as sftp:
        size, sha256 = sftp.download("users.csv", dest)

    assert (size, sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload
    assert os.listdir(dest.parent) == ["users.csv"]  # no temp file left behind


def test_a_dropped_connection_mid_download_is_resumed_and_verified(
    sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    payload = secrets.token_bytes(1_000_000)
    (sftp_server.drop_dir / "users.csv").write_bytes(payload)
    sftp_server.faults.drop_after["users.csv"] = 400_000  # the server closes the connection there, once

    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials, retry=QUICK_RETRY) as sftp:
        size, sha256 = sftp.download("users.csv", tmp_path / "users.csv")
        assert sftp.reconnects == 1

    assert sftp_server.faults.fired == ["drop:users.csv"]
    assert (size, sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert (tmp_path / "users.csv").read_bytes() == payload


def test_a_stalled_read_times_out_and_the_download_resumes(sftp_server: SftpTestServer, tmp_path: Path) -> None:
    payload = secrets.token_bytes(500_000)
    (sftp_server.drop_dir / "users.csv").write_bytes(payload)
    sftp_server.faults.stall_after["users.csv"] = 200_000
    sftp_server.faults.stall_s = 3.0

    started = time.monotonic()
    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials, timeout_s=0.5, retry=QUICK_RETRY) as sftp:
        assert sftp.download("users.csv", tmp_path / "users.csv")[1] == hashlib.sha256(payload).hexdigest()
        assert sftp.reconnects == 1
    assert time.monotonic() - started < 2.5  # the read timeout, not the 3 s stall, decided


def test_a_file_rewritten_while_the_connection_was_down_is_not_spliced(
    sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    users = sftp_server.drop_dir / "users.csv"
    users.write_bytes(secrets.token_bytes(600_000))
    sftp_server.faults.drop_after["users.csv"] = 300_000
    # The district's upload appends to the file at the moment the connection drops.
    sftp_server.faults.on_fire = lambda name: users.open("ab").write(b"more rows\n")

    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials, retry=QUICK_RETRY) as sftp:
        with pytest.raises(SftpError, match="'users.csv' changed on .* while it was being downloaded"):
            sftp.download("users.csv", tmp_path / "out" / "users.csv")
    assert os.listdir(tmp_path / "out") == []  # no partial file left behind


def test_a_connection_that_keeps_dropping_gives_up_after_the_configured_attempts(
    sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    (sftp_server.drop_dir / "users.csv").write_bytes(secrets.token_bytes(300_000))
    faults = sftp_server.faults
    faults.drop_after["users.csv"] = 100_000
    faults.on_fire = lambda name: faults.drop_after.__setitem__(name, 100_000)  # and again, every time

    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials, retry=QUICK_RETRY) as sftp:
        with pytest.raises(SftpUnavailable, match="download 'users.csv' .* failed after 3 attempt"):
            sftp.download("users.csv", tmp_path / "out" / "users.csv")
        assert sftp.reconnects == 2
    assert os.listdir(tmp_path / "out") == []  # no partial file left behind


def test_download_of_a_missing_file_is_an_sftp_error(
    sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials) as sftp:
        with pytest.raises(SftpError, match="No such file") as raised:
            sftp.download("users.csv", tmp_path / "downloads" / "users.csv")
    assert not isinstance(raised.value, SftpUnavailable)
    assert os.listdir(tmp_path / "downloads") == []


@pytest.mark.parametrize(
    "private_format",
    [serialization.PrivateFormat.OpenSSH, serialization.PrivateFormat.PKCS8],
    ids=["openssh", "pkcs8"],
)
@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_key_login_accepts_openssh_and_pem_keys(
    tmp_path: Path, algorithm: str, private_format: serialization.PrivateFormat
) -> None:
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_format = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if private_format is serialization.PrivateFormat.PKCS8
            else private_format
        )
    else:
        key = _ed25519_private()
    with running_sftp_server(
        tmp_path / "root",
        {},
        host_key_path=tmp_path / "host-key",
        authorized_keys={"lincoln-usd": [_public_line(key)]},
    ) as handle:
        (tmp_path / "root" / "lincoln-usd" / "users.csv").write_bytes(b"x")
        endpoint = SftpEndpoint(handle.host, handle.port, "lincoln-usd", "/", handle.host_key)
        credentials = SftpCredentials(private_key=_private_text(key, private_format))
        with SftpConnector(endpoint, credentials) as sftp:
            assert [remote.name for remote in sftp.list_files()] == ["users.csv"]


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_every_login_method_downloads_from_both_servers(
    server: SftpTestServer, method: str, tmp_path: Path
) -> None:
    payload = secrets.token_bytes(70_000)
    (server.drop_dir / "users.csv").write_bytes(payload)
    credentials = server.logins[method]
    assert (credentials.password is not None) == (method == "password")

    with SftpConnector(server.endpoint(), credentials) as sftp:
        assert [f.name for f in sftp.list_files()] == ["users.csv"]
        assert sftp.download("users.csv", tmp_path / "users.csv")[1] == hashlib.sha256(payload).hexdigest()


def test_a_different_host_key_is_refused_with_both_fingerprints(server: SftpTestServer) -> None:
    impostor_pin = _public_line(_ed25519_private())
    endpoint = dataclasses.replace(server.endpoint(), host_key=impostor_pin)

    with pytest.raises(HostKeyMismatch) as raised:
        with SftpConnector(endpoint, server.credentials):
            pass

    message = str(raised.value)
    assert f"127.0.0.1:{server.port}" in message
    assert f"ssh-ed25519 {host_key_fingerprint(server.host_key)}" in message
    assert host_key_fingerprint(impostor_pin) in message
    assert raised.value.offered_fingerprint == host_key_fingerprint(server.host_key)


def test_a_pin_of_another_key_type_reports_the_offered_key(server: SftpTestServer) -> None:
    rsa_pin = _public_line(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    endpoint = dataclasses.replace(server.endpoint(), host_key=rsa_pin)

    with pytest.raises(HostKeyMismatch) as raised:
        with SftpConnector(endpoint, server.credentials):
            pass

    assert f"ssh-ed25519 {host_key_fingerprint(server.host_key)}" in str(raised.value)
    assert f"ssh-rsa {host_key_fingerprint(rsa_pin)}" in str(raised.value)


def test_wrong_password_is_unavailable_without_the_password(server: SftpTestServer) -> None:
    wrong = "Wrong-" + secrets.token_urlsafe(12)

    with pytest.raises(SftpLoginRefused) as raised:
        with SftpConnector(server.endpoint(), SftpCredentials(password=wrong)):
            pass

    message = str(raised.value)
    assert f"127.0.0.1:{server.port}" in message and repr(server.username) in message
    assert wrong not in message
    assert all(wrong not in str(cause) for cause in _causes(raised.value))


def test_nothing_listening_is_unavailable_quickly() -> None:
    port = free_loopback_port()
    endpoint = SftpEndpoint("127.0.0.1", port, "lincoln-usd", "/", _public_line(_ed25519_private()))

    started = time.monotonic()
    with pytest.raises(SftpUnavailable, match=f"127.0.0.1:{port} as 'lincoln-usd' \\(1 attempt") as raised:
        with SftpConnector(endpoint, SftpCredentials(password="unused"), retry=RetryPolicy(attempts=1)):
            pass
    assert time.monotonic() - started < 2
    # paramiko's NoValidConnectionsError ("[Errno None] Unable to connect") is translated, not quoted.
    assert str(raised.value).endswith(f"TCP connect to 127.0.0.1:{port}: Connection refused")
    assert "Errno None" not in str(raised.value)


def test_refused_connections_are_retried_with_exponential_backoff() -> None:
    endpoint = SftpEndpoint("127.0.0.1", free_loopback_port(), "u", "/", _public_line(_ed25519_private()))

    started = time.monotonic()
    with pytest.raises(SftpUnavailable, match="3 attempt.*Connection refused"):
        with SftpConnector(endpoint, SftpCredentials(password="unused"), retry=RetryPolicy(3, backoff_s=0.2)):
            pass
    assert 0.6 <= time.monotonic() - started < 1.5  # waited 0.2 s, then 0.4 s


def test_a_server_that_comes_up_during_the_backoff_is_reached(tmp_path: Path) -> None:
    port, users = free_loopback_port(), {"lincoln-usd": secrets.token_urlsafe(12)}
    with running_sftp_server(tmp_path / "root", users, host_key_path=tmp_path / "key", port=port) as first:
        endpoint = SftpEndpoint("127.0.0.1", port, "lincoln-usd", "/", first.host_key)
    stop = threading.Event()

    def restart_later() -> None:  # the server is down for 0.3 s, then back with the same key
        time.sleep(0.3)
        with running_sftp_server(tmp_path / "root", users, host_key_path=tmp_path / "key", port=port):
            stop.wait(10)

    thread = threading.Thread(target=restart_later)
    started = time.monotonic()
    thread.start()
    try:
        # Attempts at 0, 0.1, 0.3 and 0.7 s: the first ones are refused, a later one gets in.
        credentials = SftpCredentials(password=users["lincoln-usd"])
        with SftpConnector(endpoint, credentials, retry=RetryPolicy(5, backoff_s=0.1)) as sftp:
            assert sftp.list_files() == []
        assert time.monotonic() - started >= 0.3
    finally:
        stop.set()
        thread.join()


def test_host_key_mismatch_and_refused_logins_are_never_retried(server: SftpTestServer) -> None:
    patient = RetryPolicy(attempts=5, backoff_s=2.0)  # a retry would show as seconds of waiting
    impostor = dataclasses.replace(server.endpoint(), host_key=_public_line(_ed25519_private()))

    started = time.monotonic()
    with pytest.raises(HostKeyMismatch):
        with SftpConnector(impostor, server.credentials, retry=patient):
            pass
    with pytest.raises(SftpLoginRefused):
        with SftpConnector(server.endpoint(), SftpCredentials(password="not-it"), retry=patient):
            pass
    assert time.monotonic() - started < 1.5


def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts TCP (backlog) but never speaks SSH
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        endpoint = SftpEndpoint("127.0.0.1", port, "u", "/", _public_line(_ed25519_private()))
        started = time.monotonic()
        with pytest.raises(SftpUnavailable, match=f"2 attempt.*no SSH banner from 127.0.0.1:{port} within 0.3 s"):
            with SftpConnector(
                endpoint, SftpCredentials(password="unused"), timeout_s=0.3, retry=RetryPolicy(2, backoff_s=0.1)
            ):
                pass
    assert 0.7 <= time.monotonic() - started < 2  # two banner timeouts of 0.3 s and a 0.1 s wait


def test_a_missing_banner_is_named_whichever_way_paramiko_reports_it() -> None:
    """paramiko ends a banner wait either with "Error reading SSH protocol banner" or, when the
    client's wait for the handshake runs out first, "No existing session" from the login after it
    (with equal timeouts, as the connector sets them, about one look in six ends the second way):
    every look must read the same, whichever way it ended."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        endpoint = SftpEndpoint("127.0.0.1", port, "u", "/", _public_line(_ed25519_private()))
        messages, causes = set(), set()
        for _ in range(4):
            with pytest.raises(SftpUnavailable) as raised:
                with SftpConnector(endpoint, SftpCredentials(password="unused"), timeout_s=0.2, retry=RetryPolicy(1)):
                    pass
            messages.add(str(raised.value))
            causes.add(str(raised.value.__cause__))
    assert messages == {
        f"cannot connect to 127.0.0.1:{port} as 'u' (1 attempt(s)): no SSH banner from 127.0.0.1:{port} "
        "within 0.2 s (is an SSH server listening there?)"
    }
    assert causes <= {"Error reading SSH protocol banner", "No existing session"}


def test_a_server_that_hangs_up_before_its_banner_is_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            connection, _ = listener.accept()
            connection.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        endpoint = SftpEndpoint("127.0.0.1", port, "u", "/", _public_line(_ed25519_private()))
        started = time.monotonic()
        with pytest.raises(SftpUnavailable, match=f"127.0.0.1:{port} closed the connection without sending an SSH banner"):
            with SftpConnector(endpoint, SftpCredentials(password="unused"), timeout_s=5, retry=RetryPolicy(1)):
                pass
        thread.join()
    assert time.monotonic() - started < 2  # not mistaken for a wait that timed out


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../users.csv", "a/users.csv", "/etc/passwd", "a\\users.csv",
     "users..csv", ".users.csv.part", "users\x00.csv", "users\n.csv"],
)
def test_unsafe_names_are_rejected(name: str) -> None:
    with pytest.raises(UnsafeFileName):
        validate_file_name(name)


def test_sandbox_reuses_its_host_key(tmp_path: Path) -> None:
    key_path = tmp_path / "home" / "host-key"
    with running_sftp_server(tmp_path / "root", {}, host_key_path=key_path) as first:
        pass
    with running_sftp_server(tmp_path / "root", {}, host_key_path=key_path) as second:
        pass
    assert first.host_key == second.host_key
    assert key_path.stat().st_mode & 0o777 == 0o600


def test_credentials_repr_shows_no_secret() -> None:
    credentials = SftpCredentials(password="hunter2-s3cret", private_key="-----BEGIN KEY-----")
    shown = f"{credentials!r} {credentials}"
    assert "hunter2" not in shown and "BEGIN" not in shown
    assert shown.startswith("SftpCredentials(password='***', private_key='***')")


def test_fetch_host_key_returns_the_key_to_pin(server: SftpTestServer) -> None:
    line = fetch_host_key(server.host, server.port)
    assert host_key_fingerprint(line) == host_key_fingerprint(server.host_key)


def test_host_key_fingerprint_matches_openssh_format() -> None:
    key = _ed25519_private()
    line = _public_line(key) + " admin@district"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + raw
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert host_key_fingerprint(line) == expected
    assert parse_public_key_line(line).get_name() == "ssh-ed25519"


def _causes(error: BaseException) -> list[BaseException]:
    chain = []
    while error.__cause__ is not None:
        error = error.__cause__
        chain.append(error)
    return chain
