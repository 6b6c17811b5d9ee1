"""SFTP client for the districts' nightly OneRoster drops, with the server's host key pinned.

A district's SFTP server is the only source of truth for its roster, so whoever answers on its
address must prove it holds the key an admin pinned at onboarding: the connector never consults
known_hosts, never auto-accepts, and tells the operator exactly which key was offered instead.
Credentials stay out of reprs, logs and exception messages. Dagster-free so it is testable alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import posixpath
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """A regular file directly in the remote folder (what a district delivers)."""

    name: str
    size: int
    mtime: int


@dataclass(frozen=True)
class SftpEndpoint:
    """Where a district delivers: `host_key` is the pinned OpenSSH public key line."""

    host: str
    port: int
    username: str
    remote_dir: str
    host_key: str


@dataclass(frozen=True, repr=False)
class SftpCredentials:
    """Password and/or private key text (OpenSSH or PEM; ed25519, ECDSA or RSA; unencrypted).

    The repr only says which secrets are set, so credentials can sit in configs and logs safely.
    """

    password: str | None = None
    private_key: str | None = None

    def __repr__(self) -> str:
        password = "'***'" if self.password is not None else "None"
        private_key = "'***'" if self.private_key is not None else "None"
        return f"SftpCredentials(password={password}, private_key={private_key})"


class SftpError(Exception):
    """Base class: anything that went wrong talking to a district's SFTP server."""


class HostKeyMismatch(SftpError):
    """The server did not prove it holds the pinned host key: possibly an impostor, never accepted.

    Both fingerprints are in the message so an admin can compare them with the district
    out of band before re-pinning.
    """

    def __init__(self, host: str, port: int, offered: paramiko.PKey | None, pinned: paramiko.PKey):
        self.offered_fingerprint = offered.fingerprint if offered is not None else None
        self.pinned_fingerprint = pinned.fingerprint
        offered_text = (
            f"{offered.get_name()} {offered.fingerprint}"
            if offered is not None
            else f"no {pinned.get_name()} key"
        )
        super().__init__(
            f"host key mismatch for {host}:{port}: server offered {offered_text}, pinned "
            f"{pinned.get_name()} {pinned.fingerprint}; refusing to connect (if the district "
            f"rotated its key, confirm the new fingerprint with them before re-pinning)"
        )


class SftpUnavailable(SftpError):
    """The server could not be reached or refused the login (refused, timeout, auth failure)."""


class UnsafeFileName(SftpError):
    """A remote name that could escape the download folder or hide as a dotfile."""


def parse_public_key_line(line: str) -> paramiko.PKey:
    """Parse `<type> <base64> [comment]` (as in known_hosts or *.pub) into a paramiko key.

    Raises ValueError with a message that names the problem, since the line comes from config.
    """
    parts = line.split()
    if len(parts) < 2:
        raise ValueError("public key line must look like '<type> <base64> [comment]'")
    key_type, blob_b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"public key line for {key_type} has invalid base64") from exc
    try:
        return paramiko.PKey.from_type_string(key_type, blob)
    except (paramiko.SSHException, paramiko.UnknownKeyType) as exc:
        raise ValueError(f"public key line is not a valid {key_type} key") from exc


def host_key_fingerprint(public_key_line: str) -> str:
    """`SHA256:<base64 without padding>` of the key, exactly as `ssh-keygen -lf` prints it."""
    return parse_public_key_line(public_key_line).fingerprint


def validate_file_name(name: str) -> str:
    """Return `name` if it is a plain file name safe to create in a local folder.

    Remote names are attacker-controlled if a district's server is compromised: separators or
    `..` could write outside the download folder, and dotfiles are typically partial uploads.
    """
    if (
        not name
        or name.startswith(".")
        or ".." in name
        or any(char in name for char in "/\\")
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in name)
    ):
        raise UnsafeFileName(f"unsafe remote file name {name!r}")
    return name


def fetch_host_key(host: str, port: int, timeout_s: float = 10.0) -> str:
    """Return the public key line the server presents, for an admin to verify and pin.

    Only a handshake is made (no login), so this works before credentials are issued. A server
    with several host keys answers with the first type paramiko prefers (ed25519, ECDSA, RSA).
    """
    try:
        with _open_transport(host, port, timeout_s) as transport:
            transport.start_client(timeout=timeout_s)
            key = transport.get_remote_server_key()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise SftpUnavailable(f"cannot fetch the host key of {host}:{port}: {exc}") from exc
    return f"{key.get_name()} {key.get_base64()}"


class SftpConnector:
    """One SFTP session to a district's folder, used as a context manager.

    The host key is checked against the pin before any credentials are sent. The pin and the
    private key are parsed up front (ValueError / SftpError), so bad config fails before I/O.
    """

    def __init__(
        self, endpoint: SftpEndpoint, credentials: SftpCredentials, *, timeout_s: float = 15.0
    ) -> None:
        self._endpoint = endpoint
        self._credentials = credentials
        self._timeout_s = timeout_s
        self._pinned_key = parse_public_key_line(endpoint.host_key)
        self._private_key = (
            _load_private_key(credentials.private_key) if credentials.private_key else None
        )
        if credentials.password is None and self._private_key is None:
            raise SftpError(f"no password or private key configured for {self._where()}")
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> SftpConnector:
        client = self._pinned_client()
        try:
            self._connect(client)
            self._sftp = client.open_sftp()
            self._sftp.get_channel().settimeout(self._timeout_s)
        except BaseException:
            client.close()
            raise
        self._client = client
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self._client is not None:
            self._client.close()
        self._sftp = self._client = None

    def list_files(self) -> list[RemoteFile]:
        """Regular files directly in the remote folder, sorted by name (dirs and links skipped)."""
        with self._remote_errors(f"list {self._endpoint.remote_dir!r}"):
            entries = self._session().listdir_attr(self._endpoint.remote_dir)
        files = [
            RemoteFile(name=entry.filename, size=entry.st_size or 0, mtime=entry.st_mtime or 0)
            for entry in entries
            if entry.st_mode is not None and stat.S_ISREG(entry.st_mode)
        ]
        return sorted(files, key=lambda remote_file: remote_file.name)

    def download(self, name: str, dest: Path) -> tuple[int, str]:
        """Download `name` to `dest` atomically; return (size, sha256 hex).

        The bytes go to a temp file next to `dest` that is renamed only once complete and the
        size matches the remote stat, so a reader never sees a partial or still-growing file.
        """
        remote_path = posixpath.join(self._endpoint.remote_dir, validate_file_name(name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as local, self._remote_errors(f"download {name!r}"):
                expected = self._session().stat(remote_path).st_size or 0
                size, digest = self._copy(remote_path, expected, local)
            if size != expected:
                raise SftpError(
                    f"downloaded {size} bytes of {name!r} from {self._where()} but the server "
                    f"reported {expected} (file still being written?)"
                )
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return size, digest

    def _copy(self, remote_path: str, expected: int, local: io.BufferedWriter) -> tuple[int, str]:
        """Stream the remote file into `local`, hashing on the way; return (size, sha256 hex)."""
        digest = hashlib.sha256()
        size = 0
        with self._session().open(remote_path, "rb") as remote:
            remote.prefetch(expected)
            while chunk := remote.read(_CHUNK_BYTES):
                local.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def _pinned_client(self) -> paramiko.SSHClient:
        """An SSHClient that trusts only the pinned key, under the name paramiko looks up."""
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        host, port = self._endpoint.host, self._endpoint.port
        known_name = host if port == 22 else f"[{host}]:{port}"
        client.get_host_keys().add(known_name, self._pinned_key.get_name(), self._pinned_key)
        return client

    def _connect(self, client: paramiko.SSHClient) -> None:
        """Handshake and log in, translating paramiko's failures into our exceptions."""
        endpoint, timeout = self._endpoint, self._timeout_s
        try:
            client.connect(
                endpoint.host,
                port=endpoint.port,
                username=endpoint.username,
                password=self._credentials.password,
                pkey=self._private_key,
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                transport_factory=_transport_offering(_host_key_algorithms(self._pinned_key)),
            )
        except paramiko.BadHostKeyException as exc:
            raise HostKeyMismatch(endpoint.host, endpoint.port, exc.key, self._pinned_key) from None
        except paramiko.IncompatiblePeer as exc:
            raise self._explain_incompatible(exc) from exc
        except paramiko.AuthenticationException as exc:
            raise SftpUnavailable(f"login to {self._where()} was refused: {exc}") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise SftpUnavailable(f"cannot connect to {self._where()}: {exc}") from exc

    def _explain_incompatible(self, exc: paramiko.IncompatiblePeer) -> SftpError:
        """Turn a failed negotiation into HostKeyMismatch when the pinned key type is missing.

        We only accept the pinned key's algorithms, so a server without a key of that type
        fails the handshake with no key to show; an unrestricted probe shows what it offers.
        """
        endpoint = self._endpoint
        try:
            offered = parse_public_key_line(
                fetch_host_key(endpoint.host, endpoint.port, self._timeout_s)
            )
        except SftpUnavailable:
            return SftpUnavailable(f"cannot negotiate with {self._where()}: {exc}")
        return HostKeyMismatch(endpoint.host, endpoint.port, offered, self._pinned_key)

    def _session(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            raise SftpError("SftpConnector must be used inside a `with` block")
        return self._sftp

    @contextmanager
    def _remote_errors(self, action: str) -> Iterator[None]:
        """Map transport failures to SftpUnavailable and SFTP status errors to SftpError."""
        try:
            yield
        except (socket.timeout, ConnectionError, EOFError, paramiko.SSHException) as exc:
            raise SftpUnavailable(f"{action} on {self._where()} failed: {exc}") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SftpError(f"{action} on {self._where()} failed: {reason}") from exc

    def _where(self) -> str:
        """host:port and user, the context every message needs (never a secret)."""
        return f"{self._endpoint.host}:{self._endpoint.port} as {self._endpoint.username!r}"


def _host_key_algorithms(key: paramiko.PKey) -> list[str]:
    """Host key algorithms that prove possession of `key` (RSA signs with SHA-2 variants)."""
    if isinstance(key, paramiko.RSAKey):
        return ["rsa-sha2-512", "rsa-sha2-256"]
    return [key.get_name()]


def _transport_offering(key_types: list[str]) -> Callable[..., paramiko.Transport]:
    """A transport factory that asks the server only for the pinned key type.

    Otherwise a server with several host keys could answer with another type than the pinned
    one and be reported as a mismatch although it holds the pinned key.
    """

    def build(sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
        transport = paramiko.Transport(sock, **kwargs)
        transport.get_security_options().key_types = key_types
        return transport

    return build


@contextmanager
def _open_transport(host: str, port: int, timeout_s: float) -> Iterator[paramiko.Transport]:
    """A not-yet-started transport over a TCP connection that honours the timeout."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout_s
    try:
        yield transport
    finally:
        transport.close()


def _load_private_key(text: str) -> paramiko.PKey:
    """Parse private key text in OpenSSH, PKCS#1/SEC1 or PKCS#8 PEM form.

    cryptography reads every format; paramiko's own readers do not read PKCS#8, so the key is
    re-encoded as OpenSSH before handing it to the matching paramiko class.
    """
    data = text.encode()
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # `from None`: the parser's error could quote the key material.
        raise SftpError(
            "private key could not be read (expected an unencrypted OpenSSH or PEM key)"
        ) from None
    key_class = _paramiko_key_class(loaded)
    openssh = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return key_class.from_private_key(io.StringIO(openssh.decode()))


def _paramiko_key_class(loaded: object) -> type[paramiko.PKey]:
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        return paramiko.Ed25519Key
    if isinstance(loaded, rsa.RSAPrivateKey):
        return paramiko.RSAKey
    if isinstance(loaded, ec.EllipticCurvePrivateKey):
        return paramiko.ECDSAKey
    raise SftpError(f"unsupported private key type {type(loaded).__name__}")
