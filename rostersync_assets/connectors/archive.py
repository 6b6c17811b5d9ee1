"""The delivery archive: every raw roster delivery is stored, byte for byte, before it is judged.

Validation may reject a delivery, a district may dispute a sync weeks later, a bug may need a
replay: all of that needs the exact bytes the district sent, so archiving comes first and the
archive never changes what it holds. Both backends share one layout:

    <prefix>/<district>/<YYYY>/<MM>/<DD>/<delivery-id>/<file>
    <prefix>/<district>/<YYYY>/<MM>/<DD>/<delivery-id>/manifest.json

The date is the delivery's UTC date. Each object is written once and read back to verify it;
re-archiving a delivery is a no-op verified by checksum, and different bytes under an existing
key are refused. manifest.json is written last, so its presence means the delivery is complete,
and a run interrupted before it can simply be repeated.

Plain Python (no Dagster) so it can be used and tested on its own; the Dagster layer wraps it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from base64 import b64encode
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from botocore.client import BaseClient
from botocore.exceptions import ClientError, FlexibleChecksumError

MANIFEST_NAME = "manifest.json"

_DISTRICT_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_CHUNK = 1024 * 1024
# Error messages show this many hex digits of a sha256: enough to tell two versions apart.
_SHA_PREFIX = 12
_KMS_ENCRYPTIONS = frozenset({"aws:kms", "aws:kms:dsse"})


@dataclass(frozen=True)
class ArchivedFile:
    """One archived file: what the district sent (name, size, sha256) and where it now lives."""

    name: str
    size: int
    sha256: str
    uri: str


@dataclass(frozen=True)
class ArchivedDelivery:
    """What archiving a delivery did; `newly_written` is 0 when the call was a verified no-op."""

    district: str
    delivery_id: str
    delivered_at: datetime
    files: tuple[ArchivedFile, ...]
    manifest_uri: str
    newly_written: int


class ArchiveIntegrityError(Exception):
    """Archived bytes disagree with their checksum, or a write would replace archived bytes.

    Messages name district, delivery, file and sha256 prefixes only: roster files hold personal
    data, and these messages end up in logs and Dagster metadata.
    """


def key_prefix(district: str, delivery_id: str, delivered_at: datetime) -> str:
    """`<district>/<YYYY>/<MM>/<DD>/<delivery-id>`: a delivery's folder below a backend's root.

    Validates every part, so no district or delivery id can lead outside its own folder.
    """
    if not _DISTRICT_SLUG.fullmatch(district):
        raise ValueError(f"invalid district slug {district!r}: expected {_DISTRICT_SLUG.pattern}")
    _check_segment("delivery id", delivery_id)
    return f"{district}/{_as_utc(delivered_at):%Y/%m/%d}/{delivery_id}"


class DeliveryArchive(ABC):
    """Write-once storage of deliveries; subclasses only move bytes, all policy lives here."""

    def archive(
        self,
        *,
        district: str,
        delivery_id: str,
        delivered_at: datetime,
        source: str,
        files: Mapping[str, Path],
    ) -> ArchivedDelivery:
        """Store the staged `files` (archive name -> local path) as one delivery, manifest last.

        "The same delivery" means the same file names and bytes; `source` and the time of day are
        recorded by the first archiving only. Raises ArchiveIntegrityError when the delivery, or
        any of its keys, already holds other bytes; ValueError for names that could escape.
        """
        folder = key_prefix(district, delivery_id, delivered_at)
        if not files:
            raise ValueError(f"delivery {delivery_id} of district {district} has no files")
        for name in files:
            _check_file_name(name)
        entries = [_describe(name, files[name]) for name in sorted(files)]
        context = _Context(district, delivery_id)

        archived_manifest = self._manifest_or_none(folder)
        if archived_manifest is not None:
            context.check_same_files(archived_manifest["files"], entries)
        written = sum(
            self._store_once(f"{folder}/{e['name']}", files[e["name"]], e["sha256"], context)
            for e in entries
        )
        if archived_manifest is None:
            manifest = _manifest(district, delivery_id, delivered_at, source, entries)
            written += self._write_manifest(folder, manifest, context)
        return ArchivedDelivery(
            district=district,
            delivery_id=delivery_id,
            delivered_at=_as_utc(delivered_at),
            files=tuple(ArchivedFile(**e, uri=self._uri(f"{folder}/{e['name']}")) for e in entries),
            manifest_uri=self._uri(f"{folder}/{MANIFEST_NAME}"),
            newly_written=written,
        )

    def read(self, district: str, delivery_id: str, delivered_at: datetime, name: str) -> bytes:
        """The archived bytes of one file, after checking them against the manifest's sha256.

        Raises FileNotFoundError when the delivery or file is not archived, ArchiveIntegrityError
        when the stored bytes were changed after archiving.
        """
        folder = key_prefix(district, delivery_id, delivered_at)
        _check_file_name(name)
        context = _Context(district, delivery_id)
        listed = {entry["name"]: entry["sha256"] for entry in self._load(folder)["files"]}
        if name not in listed:
            raise FileNotFoundError(f"{context.about(name)} is not archived")
        data = b"".join(self._iter_object(f"{folder}/{name}"))
        actual = hashlib.sha256(data).hexdigest()
        if actual != listed[name]:
            raise ArchiveIntegrityError(
                "archived bytes changed: "
                + context.mismatch(name, "manifest", listed[name], "stored", actual)
            )
        return data

    def attach_report(
        self, district: str, delivery_id: str, delivered_at: datetime, name: str, body: bytes
    ) -> str:
        """Store a report derived from a delivery (its diagnostics) beside it; returns its URI.

        The key carries the report's own sha256 (`reports/<stem>-<12 hex>.<ext>`), so judging the
        same delivery the same way again is a no-op and a different judgement (a new profile, new
        rules) never overwrites an earlier one: the archive stays write-once.
        """
        folder = key_prefix(district, delivery_id, delivered_at)
        _check_file_name(name)
        stem, _, extension = name.rpartition(".")
        sha256 = hashlib.sha256(body).hexdigest()
        key = f"{folder}/reports/{stem or extension}-{sha256[:12]}.{extension if stem else 'bin'}"
        context = _Context(district, delivery_id)
        if self._stored_sha256(key) is None and self._put_new(key, io.BytesIO(body), sha256):
            self._verify_written(key, sha256, context)
        return self._uri(key)

    def load_manifest(
        self, district: str, delivery_id: str, delivered_at: datetime
    ) -> dict[str, Any]:
        """An archived delivery's manifest; FileNotFoundError when not (completely) archived."""
        return self._load(key_prefix(district, delivery_id, delivered_at))

    def _store_once(self, key: str, path: Path, sha256: str, context: _Context) -> int:
        """Write `path` to `key` unless it holds the same sha256; the objects written (0 or 1)."""
        stored = self._stored_sha256(key)
        if stored is None:
            with path.open("rb") as body:
                if self._put_new(key, body, sha256):
                    self._verify_written(key, sha256, context)
                    return 1
            # A concurrent run created the key between our check and our write: judge its bytes.
            stored = self._stored_sha256(key)
        if stored != sha256:
            raise ArchiveIntegrityError(
                "refusing to replace archived bytes: "
                + context.mismatch(_key_name(key), "archived", stored, "delivered", sha256)
            )
        return 0

    def _write_manifest(self, folder: str, manifest: dict[str, Any], context: _Context) -> int:
        """Written last, so that its presence means every file is archived and verified."""
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        key, sha256 = f"{folder}/{MANIFEST_NAME}", hashlib.sha256(body).hexdigest()
        if self._put_new(key, io.BytesIO(body), sha256):
            self._verify_written(key, sha256, context)
            return 1
        # A concurrent run of the same delivery finished first: fine if it archived the same files.
        context.check_same_files(self._load(folder)["files"], manifest["files"])
        return 0

    def _verify_written(self, key: str, sha256: str, context: _Context) -> None:
        """Hash what the store now holds; S3-compatible servers don't all reject bad checksums.

        A corrupt object is removed (this call just created it) so that a retry can write it again
        instead of finding a key whose metadata vouches for bytes it does not hold.
        """
        try:
            actual = self._object_sha256(key)
        except ArchiveIntegrityError as err:  # the store's own checksum already disagrees
            problem = str(err)
        else:
            if actual == sha256:
                return
            problem = context.mismatch(_key_name(key), "sent", sha256, "stored", actual)
        self._delete(key)
        raise ArchiveIntegrityError(f"write verification failed, object removed: {problem}")

    def _manifest_or_none(self, folder: str) -> dict[str, Any] | None:
        try:
            return self._load(folder)
        except FileNotFoundError:
            return None

    def _load(self, folder: str) -> dict[str, Any]:
        body = b"".join(self._iter_object(f"{folder}/{MANIFEST_NAME}"))
        manifest: dict[str, Any] = json.loads(body)
        return manifest

    def _object_sha256(self, key: str) -> str:
        return _sha256_of(self._iter_object(key))

    def _stored_sha256(self, key: str) -> str | None:
        """The sha256 of the object at `key`, None when absent; backends with checksum metadata
        override this so that a no-op re-archive does not read every object back."""
        try:
            return self._object_sha256(key)
        except FileNotFoundError:
            return None

    @abstractmethod
    def _put_new(self, key: str, body: BinaryIO, sha256: str) -> bool:
        """Create the object at `key` from `body`; False (and nothing written) if the key exists."""

    @abstractmethod
    def _iter_object(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks; FileNotFoundError when there is no object at `key`."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Remove an object this archive just wrote and found corrupt."""

    @abstractmethod
    def _uri(self, key: str) -> str:
        """Where the object at `key` lives, for people and for downstream assets."""


class LocalArchive(DeliveryArchive):
    """A folder as archive (development, tests, single-host installs); files end up read-only."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self._root / key

    def _put_new(self, key: str, body: BinaryIO, sha256: str) -> bool:
        """Temp file, fsync, read-only, `os.replace`: no reader sees a partial or writable file.

        The existence check and the rename are not one atomic step, so two processes racing on the
        same key could both write; the read-back verification then tells the loser.
        """
        dest = self._path(key)
        if dest.exists():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(body, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
                os.fchmod(out.fileno(), 0o444)
            os.replace(temp, dest)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_directory(dest.parent)
        return True

    def _iter_object(self, key: str) -> Iterator[bytes]:
        return _read_chunks(self._path(key))

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _uri(self, key: str) -> str:
        return self._path(key).as_uri()


class S3Archive(DeliveryArchive):
    """An S3 bucket (or S3-compatible store) as archive, objects encrypted at rest and write-once.

    `client` is a boto3 S3 client, e.g. from dagster-aws's `S3Resource.get_client()`.
    """

    def __init__(
        self,
        client: BaseClient,
        bucket: str,
        prefix: str = "",
        sse: str | None = "AES256",
        kms_key_id: str | None = None,
    ) -> None:
        if kms_key_id is not None and sse not in _KMS_ENCRYPTIONS:
            raise ValueError(f"kms_key_id needs sse in {sorted(_KMS_ENCRYPTIONS)}, got {sse!r}")
        self._client = client
        self._bucket = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._encryption: dict[str, str] = {}
        if sse is not None:
            self._encryption["ServerSideEncryption"] = sse
        if kms_key_id is not None:
            self._encryption["SSEKMSKeyId"] = kms_key_id

    def _object_key(self, key: str) -> str:
        return self._prefix + key

    def _stored_sha256(self, key: str) -> str | None:
        """The `sha256` metadata from head_object, so a no-op re-archive downloads nothing."""
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=self._object_key(key))
        except ClientError as err:
            if _is_missing(err):
                return None
            raise
        # An object put there by another tool has no sha256 metadata: hash its bytes instead.
        return head["Metadata"].get("sha256") or super()._stored_sha256(key)

    def _put_new(self, key: str, body: BinaryIO, sha256: str) -> bool:
        """put_object with `IfNoneMatch="*"`: the server refuses to replace an existing key, which
        closes the gap between our head_object check and the write. (Needs a 2024-08 or later
        botocore; moto 5 and AWS honour it, older S3-compatible servers may ignore it.)"""
        try:
            self._client.put_object(
                Bucket=self._bucket,
                Key=self._object_key(key),
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=b64encode(bytes.fromhex(sha256)).decode("ascii"),
                Metadata={"sha256": sha256},
                IfNoneMatch="*",
                **self._encryption,
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return False
            raise
        return True

    def _iter_object(self, key: str) -> Iterator[bytes]:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._object_key(key))
        except ClientError as err:
            if _is_missing(err):
                raise FileNotFoundError(self._uri(key)) from err
            raise
        with closing(response["Body"]) as body:
            try:
                yield from body.iter_chunks(_CHUNK)
            except FlexibleChecksumError as err:
                # botocore checks the bytes against the checksum S3 stored with the object (at the
                # end of the stream); its message holds checksums only, never content.
                raise ArchiveIntegrityError(
                    f"{self._uri(key)}: stored bytes contradict their checksum: {err}"
                ) from err

    def _delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=self._object_key(key))

    def _uri(self, key: str) -> str:
        return f"s3://{self._bucket}/{self._object_key(key)}"


@dataclass(frozen=True)
class _Context:
    """Which delivery an error is about, and the wording shared by all integrity errors."""

    district: str
    delivery_id: str

    def about(self, name: str) -> str:
        return f"{name} of delivery {self.delivery_id} of district {self.district}"

    def mismatch(
        self, name: str, label: str, sha256: str | None, other_label: str, other: str | None
    ) -> str:
        versions = f"{label} sha256 {_short(sha256)}, {other_label} sha256 {_short(other)}"
        return f"{self.about(name)}: {versions}"

    def check_same_files(
        self, archived: Iterable[dict[str, Any]], delivered: Iterable[dict[str, Any]]
    ) -> None:
        """Refuse to re-archive a delivery whose file set or any file's bytes changed."""
        old = {entry["name"]: entry["sha256"] for entry in archived}
        new = {entry["name"]: entry["sha256"] for entry in delivered}
        if old != new:
            raise ArchiveIntegrityError(
                "delivery already archived with other contents, refusing to change it: "
                + "; ".join(
                    self.mismatch(name, "archived", old.get(name), "delivered", new.get(name))
                    for name in sorted(old.keys() | new.keys())
                    if old.get(name) != new.get(name)
                )
            )


def _key_name(key: str) -> str:
    """The file name at the end of an archive key."""
    return key.rsplit("/", 1)[-1]


def _check_segment(kind: str, value: str) -> None:
    """A delivery id or file name is exactly one path segment: nothing that could climb or nest."""
    if (
        not value
        or value == "."
        or ".." in value
        or "/" in value
        or "\\" in value
        or any(ord(char) < 32 or ord(char) == 127 for char in value)
        or len(value.encode()) > 255
    ):
        raise ValueError(f"invalid {kind} {value!r}: one path segment, no '/', '\\' or '..'")


def _check_file_name(name: str) -> None:
    _check_segment("file name", name)
    if name == MANIFEST_NAME:
        raise ValueError(f"file name {MANIFEST_NAME!r} is reserved for the archive's manifest")


def _as_utc(moment: datetime) -> datetime:
    """Naive datetimes are refused: guessing their zone could file a delivery under another day."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"delivered_at must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _describe(name: str, path: Path) -> dict[str, Any]:
    """The manifest entry of a staged file, hashed in chunks: large files never sit in memory."""
    digest, size = hashlib.sha256(), 0
    for chunk in _read_chunks(path):
        digest.update(chunk)
        size += len(chunk)
    return {"name": name, "size": size, "sha256": digest.hexdigest()}


def _manifest(
    district: str,
    delivery_id: str,
    delivered_at: datetime,
    source: str,
    entries: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "district": district,
        "delivery_id": delivery_id,
        "source": source,
        "delivered_at": _as_utc(delivered_at).isoformat(),
        "archived_at": datetime.now(UTC).isoformat(),
        "files": entries,
    }


def _read_chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in chunks, opened lazily: FileNotFoundError surfaces on the first chunk."""
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk


def _sha256_of(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _short(sha256: str | None) -> str:
    return f"{sha256[:_SHA_PREFIX]}..." if sha256 else "(absent)"


def _is_missing(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself: without it a crash can forget a file that fsync already wrote."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
