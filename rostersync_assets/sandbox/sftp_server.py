"""An in-process SFTP server on loopback that stands in for districts' SFTP servers.

The demo and the tests need a real SSH/SFTP endpoint (host key, login, directory listing) without
installing or configuring sshd, so this runs asyncssh on its own event loop in a daemon thread and
can be used from synchronous code. Each login is chrooted to `root/<username>`, the same isolation
a hosted SFTP service gives each district. `SftpFaults` switches on the misbehaviour real servers
show (a connection dropped mid-download, a read that hangs, a compromised server listing hostile names)
so the client's handling of it can be tested against a real SSH stack.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from asyncssh.constants import FILEXFER_TYPE_REGULAR

# Usernames become folder names under the root, so they must be one plain path component.
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LOOP_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class SftpServerHandle:
    """Where the running server listens and the public key line clients should pin."""

    host: str
    port: int
    host_key: str


@dataclass
class SftpFaults:
    """Misbehaviour to switch on, per file name; each transfer fault fires once, then the file is served.

    `drop_after` closes the whole SSH connection once that many bytes of the file have been asked
    for; `stall_after` makes the read past that offset hang (until the client closes the connection,
    at most `stall_s`; what a dead network looks like to the client); `extra_names` are added to every
    directory listing as regular files, as a compromised server could. `fired` records what fired,
    and `on_fire(name)` runs (on the server's thread) the moment a transfer fault fires, so a test can
    change the file exactly then. Mutate it while the server runs: it is read on every request.
    """

    drop_after: dict[str, int] = field(default_factory=dict)
    stall_after: dict[str, int] = field(default_factory=dict)
    stall_s: float = 5.0
    extra_names: tuple[str, ...] = ()
    fired: list[str] = field(default_factory=list)
    on_fire: Callable[[str], None] | None = None

    def fire(self, kind: str, name: str) -> None:
        self.fired.append(f"{kind}:{name}")
        if self.on_fire is not None:
            self.on_fire(name)


@contextmanager
def running_sftp_server(
    root: Path,
    users: Mapping[str, str],
    *,
    host_key_path: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    authorized_keys: Mapping[str, Sequence[str]] | None = None,
    faults: SftpFaults | None = None,
) -> Iterator[SftpServerHandle]:
    """Serve SFTP for `users` (username -> password) until the block exits.

    `authorized_keys` (username -> OpenSSH public key lines) additionally enables key login.
    The ed25519 host key at `host_key_path` is created if missing and reused otherwise, so a
    demo home keeps the fingerprint its configuration pinned. Port 0 picks a free port.
    `faults` (tests only) makes the server misbehave as described in SftpFaults.
    """
    keys_by_user = {
        user: _parse_public_keys(lines) for user, lines in (authorized_keys or {}).items()
    }
    chroots = _make_user_roots(root, set(users) | set(keys_by_user))
    host_key = _load_or_create_host_key(host_key_path)
    connections: set[asyncssh.SSHServerConnection] = set()

    def make_server() -> asyncssh.SSHServer:
        return _DistrictServer(dict(users), keys_by_user, connections)

    def make_sftp(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        chroot = chroots[chan.get_extra_info("username")]
        if faults is None:
            return asyncssh.SFTPServer(chan, chroot=chroot)
        return _FaultySftpServer(chan, chroot=chroot, faults=faults)

    with _event_loop_thread() as loop:
        acceptor = _run(loop, _listen(host, port, host_key, make_server, make_sftp))
        try:
            yield SftpServerHandle(
                host=host, port=acceptor.get_port(), host_key=_public_line(host_key)
            )
        finally:
            _run(loop, _shut_down(acceptor, connections))


class _DistrictServer(asyncssh.SSHServer):
    """Authenticates against the configured passwords/keys; everything but SFTP is refused."""

    def __init__(
        self,
        passwords: dict[str, str],
        keys_by_user: dict[str, frozenset[bytes]],
        connections: set[asyncssh.SSHServerConnection],
    ) -> None:
        self._passwords = passwords
        self._keys_by_user = keys_by_user
        self._connections = connections
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return bool(self._passwords)

    def validate_password(self, username: str, password: str) -> bool:
        # Compare even for unknown users so timing does not reveal which logins exist.
        expected = self._passwords.get(username)
        matches = hmac.compare_digest(password.encode(), (expected or "\0").encode())
        return expected is not None and matches

    def public_key_auth_supported(self) -> bool:
        return bool(self._keys_by_user)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data in self._keys_by_user.get(username, frozenset())


class _FaultySftpServer(asyncssh.SFTPServer):
    """The standard chrooted SFTP server, with the switched-on SftpFaults applied."""

    def __init__(self, chan: asyncssh.SSHServerChannel, *, chroot: bytes, faults: SftpFaults) -> None:
        super().__init__(chan, chroot=chroot)
        self._faults = faults
        self._names: dict[int, str] = {}

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        file_obj = super().open(path, pflags, attrs)
        self._names[id(file_obj)] = os.fsdecode(path).rsplit("/", 1)[-1]
        return file_obj

    def close(self, file_obj: object) -> None:
        self._names.pop(id(file_obj), None)
        super().close(file_obj)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        name = self._names.get(id(file_obj), "")
        faults = self._faults
        if offset + size > faults.drop_after.get(name, offset + size):
            del faults.drop_after[name]
            faults.fire("drop", name)
            self.connection.abort()
            raise asyncssh.SFTPConnectionLost("connection dropped by SftpFaults")
        if offset + size > faults.stall_after.get(name, offset + size):
            del faults.stall_after[name]
            faults.fire("stall", name)
            # Hang until the client gives up (closing the connection) or stall_s passes.
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.connection.wait_closed(), faults.stall_s)
            self.connection.abort()
            raise asyncssh.SFTPConnectionLost("connection closed after a stall by SftpFaults")
        return super().read(file_obj, offset, size)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        async for entry in super().scandir(path):
            yield entry
        for extra in self._faults.extra_names:
            attrs = asyncssh.SFTPAttrs(type=FILEXFER_TYPE_REGULAR, size=1, permissions=0o100644, mtime=0)
            yield asyncssh.SFTPName(extra.encode(), attrs=attrs)


def _parse_public_keys(lines: Sequence[str]) -> frozenset[bytes]:
    return frozenset(asyncssh.import_public_key(line).public_data for line in lines)


def _make_user_roots(root: Path, usernames: set[str]) -> dict[str, bytes]:
    """Create `root/<user>` for every login; return the chroot paths asyncssh expects."""
    chroots = {}
    for username in sorted(usernames):
        if not _USERNAME.fullmatch(username):
            raise ValueError(f"username {username!r} is not usable as a folder name")
        user_root = (root / username).resolve()
        user_root.mkdir(parents=True, exist_ok=True)
        chroots[username] = os.fsencode(user_root)
    return chroots


def _load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Reuse the host key at `path`, or generate an ed25519 one readable only by us."""
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key.export_private_key())
    return key


def _public_line(key: asyncssh.SSHKey) -> str:
    """`<type> <base64>` without a comment, the form stored in a pinned endpoint."""
    key_type, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{key_type} {blob}"


async def _listen(
    host: str,
    port: int,
    host_key: asyncssh.SSHKey,
    make_server: Callable[[], asyncssh.SSHServer],
    make_sftp: Callable[[asyncssh.SSHServerChannel], asyncssh.SFTPServer],
) -> asyncssh.SSHAcceptor:
    """Start listening (a coroutine, because asyncssh.listen returns an awaitable wrapper)."""
    return await asyncssh.listen(
        host,
        port,
        server_host_keys=[host_key],
        server_factory=make_server,
        sftp_factory=make_sftp,
        allow_scp=False,
    )


async def _shut_down(
    acceptor: asyncssh.SSHAcceptor, connections: set[asyncssh.SSHServerConnection]
) -> None:
    """Stop listening, then close open sessions (closing the listener alone leaves them up)."""
    acceptor.close()
    await acceptor.wait_closed()
    for conn in list(connections):
        conn.close()
        await conn.wait_closed()


@contextmanager
def _event_loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a daemon thread, stopped and closed on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox-sftp-server", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_LOOP_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()


def _run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the server's loop from the calling thread and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=_LOOP_TIMEOUT_S)
