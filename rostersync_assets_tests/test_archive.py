"""The delivery archive on both backends: a local folder, and S3 via moto's server over HTTP."""

from __future__ import annotations

import hashlib
import itertools
import stat
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from rostersync_assets.connectors.archive import (
    MANIFEST_NAME,
    ArchivedDelivery,
    ArchiveIntegrityError,
    DeliveryArchive,
    LocalArchive,
    S3Archive,
    key_prefix,
)

DISTRICT = "lincoln-usd"
DELIVERY = "d-20260901-2330"
SOURCE = "sftp://sftp.lincoln.example/outbound/oneroster.zip"
# 23:30 in UTC-5 is already the next day in UTC: the folder must follow the UTC date.
DELIVERED_AT = datetime(2026, 9, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
FOLDER = f"{DISTRICT}/2026/09/02/{DELIVERY}"

# Personal data as real feeds carry it: none of it may ever appear in an error message.
PERSONAL = ("Avery", "Quill", "avery.quill@lincoln.example", "Tr0ub4dor&3", "Morgan")
DELIVERY_FILES = {
    "manifest.csv": b"propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\n",
    "orgs.csv": b"sourcedId,status,dateLastModified,name,type\norg-1,,,Lincoln High,school\n",
    "users.csv": b"sourcedId,givenName,familyName,email,password\n"
    b"u-1,Avery,Quill,avery.quill@lincoln.example,Tr0ub4dor&3\n",
}
CHANGED_USERS = DELIVERY_FILES["users.csv"].replace(b"Avery", b"Morgan")

# Writes contents to a fresh staging folder and returns file name -> staged path.
Stage = Callable[[dict[str, bytes]], dict[str, Path]]


@dataclass(frozen=True)
class Backend:
    """An archive plus raw access to its store, to inspect and tamper behind the archive's back."""

    archive: DeliveryArchive
    prefix: str  # what precedes every archive key in the store
    uri_base: str
    keys: Callable[[], set[str]]
    put_raw: Callable[[str, bytes], None]  # write an archive key directly, bypassing all checks


def _local_backend(root: Path) -> Backend:
    def keys() -> set[str]:
        return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}

    def put_raw(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o644)
        path.write_bytes(data)

    return Backend(LocalArchive(root), "", root.resolve().as_uri() + "/", keys, put_raw)


def _s3_backend(client: BaseClient, bucket: str) -> Backend:
    prefix = "rosters/"

    def keys() -> set[str]:
        listing = client.list_objects_v2(Bucket=bucket)
        return {item["Key"] for item in listing.get("Contents", [])}

    def put_raw(key: str, data: bytes) -> None:
        # Keep any sha256 metadata: the sneakiest tamper leaves the object's label intact.
        try:
            metadata = client.head_object(Bucket=bucket, Key=prefix + key)["Metadata"]
        except ClientError:
            metadata = {}
        client.put_object(Bucket=bucket, Key=prefix + key, Body=data, Metadata=metadata)

    archive = S3Archive(client, bucket, prefix="/rosters/")
    return Backend(archive, prefix, f"s3://{bucket}/{prefix}", keys, put_raw)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test runs once per backend; the S3 server only starts when an S3 test needs it."""
    if request.param == "local":
        return _local_backend(tmp_path / "archive")
    return _s3_backend(*request.getfixturevalue("s3_bucket"))


@pytest.fixture
def s3(s3_bucket: tuple[BaseClient, str]) -> tuple[BaseClient, str, Backend]:
    """For S3-only checks: the raw client and bucket next to the backend under test."""
    return (*s3_bucket, _s3_backend(*s3_bucket))


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    """Write contents to a staging folder, as the SFTP/REST connectors do before archiving."""

    batches = itertools.count()

    def write(contents: dict[str, bytes]) -> dict[str, Path]:
        staging = tmp_path / "staging" / str(next(batches))
        staging.mkdir(parents=True)
        for name, data in contents.items():
            (staging / name).write_bytes(data)
        return {name: staging / name for name in contents}

    return write


def _archive(
    archive: DeliveryArchive, files: dict[str, Path], **overrides: Any
) -> ArchivedDelivery:
    arguments = {
        "district": DISTRICT,
        "delivery_id": DELIVERY,
        "delivered_at": DELIVERED_AT,
        "source": SOURCE,
    }
    return archive.archive(**(arguments | overrides), files=files)


def _read_users(backend: Backend) -> bytes:
    return backend.archive.read(DISTRICT, DELIVERY, DELIVERED_AT, "users.csv")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_names_without_content(error: ArchiveIntegrityError) -> None:
    message = str(error)
    assert DISTRICT in message and DELIVERY in message and "users.csv" in message
    assert not any(value in message for value in PERSONAL)


def _assert_names_both_versions_without_content(error: ArchiveIntegrityError) -> None:
    """For errors about users.csv holding CHANGED_USERS where the original was expected."""
    _assert_names_without_content(error)
    for version in (DELIVERY_FILES["users.csv"], CHANGED_USERS):
        assert _sha256(version)[:12] in str(error)


def test_archive_then_read_back(backend: Backend, stage: Stage) -> None:
    result = _archive(backend.archive, stage(DELIVERY_FILES))

    assert result.newly_written == len(DELIVERY_FILES) + 1
    assert result.delivered_at == datetime(2026, 9, 2, 4, 30, tzinfo=UTC)
    assert [(f.name, f.size, f.sha256) for f in result.files] == [
        (name, len(data), _sha256(data)) for name, data in sorted(DELIVERY_FILES.items())
    ]
    for name, data in DELIVERY_FILES.items():
        assert backend.archive.read(DISTRICT, DELIVERY, DELIVERED_AT, name) == data


def test_keys_follow_the_layout_exactly(backend: Backend, stage: Stage) -> None:
    result = _archive(backend.archive, stage(DELIVERY_FILES))

    expected = {f"{FOLDER}/{name}" for name in [*DELIVERY_FILES, "manifest.json"]}
    assert backend.keys() == {backend.prefix + key for key in expected}
    uris = {f.uri for f in result.files} | {result.manifest_uri}
    assert uris == {backend.uri_base + key for key in expected}


def test_manifest_describes_the_delivery(backend: Backend, stage: Stage) -> None:
    _archive(backend.archive, stage(DELIVERY_FILES))

    manifest = backend.archive.load_manifest(DISTRICT, DELIVERY, DELIVERED_AT)
    archived_at = datetime.fromisoformat(manifest.pop("archived_at"))
    assert archived_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - archived_at) < timedelta(minutes=1)
    assert manifest == {
        "district": DISTRICT,
        "delivery_id": DELIVERY,
        "source": SOURCE,
        "delivered_at": "2026-09-02T04:30:00+00:00",
        "files": [
            {"name": name, "size": len(data), "sha256": _sha256(data)}
            for name, data in sorted(DELIVERY_FILES.items())
        ],
    }


def test_rearchiving_the_same_delivery_writes_nothing(
    backend: Backend, stage: Stage
) -> None:
    first = _archive(backend.archive, stage(DELIVERY_FILES))
    manifest = backend.archive.load_manifest(DISTRICT, DELIVERY, DELIVERED_AT)

    again = _archive(backend.archive, stage(DELIVERY_FILES))

    assert again.newly_written == 0
    assert (again.files, again.manifest_uri) == (first.files, first.manifest_uri)
    assert backend.archive.load_manifest(DISTRICT, DELIVERY, DELIVERED_AT) == manifest


def test_different_bytes_for_an_archived_delivery_are_refused(
    backend: Backend, stage: Stage
) -> None:
    _archive(backend.archive, stage(DELIVERY_FILES))
    keys = backend.keys()

    with pytest.raises(ArchiveIntegrityError) as refused:
        _archive(backend.archive, stage(DELIVERY_FILES | {"users.csv": CHANGED_USERS}))

    _assert_names_both_versions_without_content(refused.value)
    assert backend.keys() == keys
    assert _read_users(backend) == DELIVERY_FILES["users.csv"]


def test_different_bytes_under_a_key_of_an_interrupted_run_are_refused(
    backend: Backend, stage: Stage
) -> None:
    """An earlier run stopped before its manifest: the key itself still refuses other bytes."""
    backend.put_raw(f"{FOLDER}/users.csv", DELIVERY_FILES["users.csv"])

    with pytest.raises(ArchiveIntegrityError) as refused:
        _archive(backend.archive, stage(DELIVERY_FILES | {"users.csv": CHANGED_USERS}))

    _assert_names_both_versions_without_content(refused.value)
    assert backend.prefix + f"{FOLDER}/manifest.json" not in backend.keys()


def test_rearchiving_completes_an_interrupted_run(backend: Backend, stage: Stage) -> None:
    backend.put_raw(f"{FOLDER}/users.csv", DELIVERY_FILES["users.csv"])

    result = _archive(backend.archive, stage(DELIVERY_FILES))

    assert result.newly_written == len(DELIVERY_FILES)  # the two missing files and the manifest
    assert _read_users(backend) == DELIVERY_FILES["users.csv"]


def test_a_changed_file_set_is_refused(backend: Backend, stage: Stage) -> None:
    _archive(backend.archive, stage(DELIVERY_FILES))

    without_orgs = {name: DELIVERY_FILES[name] for name in ("manifest.csv", "users.csv")}

    with pytest.raises(ArchiveIntegrityError) as refused:
        _archive(backend.archive, stage(without_orgs))

    archived = _sha256(DELIVERY_FILES["orgs.csv"])[:12]
    assert f"orgs.csv of delivery {DELIVERY} of district {DISTRICT}: " in str(refused.value)
    assert f"archived sha256 {archived}..., delivered sha256 (absent)" in str(refused.value)


def test_tampered_object_is_detected_by_read(backend: Backend, stage: Stage) -> None:
    _archive(backend.archive, stage(DELIVERY_FILES))
    backend.put_raw(f"{FOLDER}/users.csv", CHANGED_USERS)

    with pytest.raises(ArchiveIntegrityError) as detected:
        backend.archive.read(DISTRICT, DELIVERY, DELIVERED_AT, "users.csv")

    _assert_names_both_versions_without_content(detected.value)


def test_reading_a_file_outside_the_delivery_is_not_found(
    backend: Backend, stage: Stage
) -> None:
    _archive(backend.archive, stage(DELIVERY_FILES))

    with pytest.raises(FileNotFoundError):
        backend.archive.read(DISTRICT, DELIVERY, DELIVERED_AT, "courses.csv")
    with pytest.raises(FileNotFoundError):
        backend.archive.read(DISTRICT, "d-never-delivered", DELIVERED_AT, "users.csv")


@pytest.mark.parametrize(
    "district", ["", "x", "Lincoln", "-lincoln", "lincoln_usd", "../lincoln", "lincoln/usd"]
)
def test_invalid_district_is_refused(backend: Backend, stage: Stage, district: str) -> None:
    with pytest.raises(ValueError, match="district"):
        _archive(backend.archive, stage(DELIVERY_FILES), district=district)
    assert backend.keys() == set()


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../users.csv", "a/users.csv", "a\\users.csv", "users\x00.csv", MANIFEST_NAME],
)
def test_invalid_file_name_is_refused(backend: Backend, stage: Stage, name: str) -> None:
    files = stage(DELIVERY_FILES)
    with pytest.raises(ValueError, match="file name"):
        _archive(backend.archive, files | {name: files["users.csv"]})
    assert backend.keys() == set()


@pytest.mark.parametrize(
    ("overrides", "files", "error"),
    [
        ({"delivery_id": "../d-1"}, DELIVERY_FILES, "delivery id"),
        ({"delivered_at": DELIVERED_AT.replace(tzinfo=None)}, DELIVERY_FILES, "timezone-aware"),
        ({}, {}, "no files"),
    ],
    ids=["delivery-id-escapes", "naive-delivered-at", "no-files"],
)
def test_invalid_delivery_is_refused(
    backend: Backend,
    stage: Stage,
    overrides: dict[str, Any],
    files: dict[str, bytes],
    error: str,
) -> None:
    with pytest.raises(ValueError, match=error):
        _archive(backend.archive, stage(files), **overrides)
    assert backend.keys() == set()


def test_key_prefix_files_by_utc_day() -> None:
    assert key_prefix(DISTRICT, DELIVERY, DELIVERED_AT) == FOLDER
    utc = datetime(2026, 9, 1, 23, 30, tzinfo=UTC)
    assert key_prefix(DISTRICT, DELIVERY, utc) == f"{DISTRICT}/2026/09/01/{DELIVERY}"


def test_local_files_are_read_only(tmp_path: Path, stage: Stage) -> None:
    _archive(LocalArchive(tmp_path / "archive"), stage(DELIVERY_FILES))

    archived = [path for path in (tmp_path / "archive").rglob("*") if path.is_file()]
    assert len(archived) == len(DELIVERY_FILES) + 1
    assert {stat.S_IMODE(path.stat().st_mode) for path in archived} == {0o444}


def test_s3_objects_are_encrypted_and_carry_their_sha256(
    s3: tuple[BaseClient, str, Backend], stage: Stage
) -> None:
    client, bucket, backend = s3
    _archive(backend.archive, stage(DELIVERY_FILES))

    key = f"rosters/{FOLDER}/users.csv"
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    digest = hashlib.sha256(DELIVERY_FILES["users.csv"]).digest()
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {"sha256": digest.hex()}
    assert head["ChecksumSHA256"] == b64encode(digest).decode()


def test_s3_kms_encryption_names_the_key(
    s3_bucket: tuple[BaseClient, str], stage: Stage
) -> None:
    client, bucket = s3_bucket
    with pytest.raises(ValueError, match="kms_key_id"):
        S3Archive(client, bucket, kms_key_id="alias/rostersync-archive")
    archive = S3Archive(client, bucket, sse="aws:kms", kms_key_id="alias/rostersync-archive")

    _archive(archive, stage({"users.csv": DELIVERY_FILES["users.csv"]}))

    head = client.head_object(Bucket=bucket, Key=f"{FOLDER}/users.csv")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == "alias/rostersync-archive"


@pytest.mark.parametrize(
    "server_keeps_checksum", [True, False], ids=["server-keeps-checksum", "server-drops-checksum"]
)
def test_s3_upload_corrupted_in_transit_is_caught_and_removed(
    s3: tuple[BaseClient, str, Backend], stage: Stage, server_keeps_checksum: bool
) -> None:
    """moto, like some S3-compatible servers, stores bytes that contradict the sent ChecksumSHA256.
    The read-back after each write catches it either way: by botocore's response checksum check
    when the server kept the checksum, by our own sha256 when it dropped it. The object is removed
    so that a retry can succeed."""
    client, _, backend = s3

    def corrupt_users_csv(request: Any, **_: Any) -> None:
        if request.url.endswith("/users.csv"):
            request.body = CHANGED_USERS
            request.headers["Content-Length"] = str(len(CHANGED_USERS))
            if not server_keeps_checksum:
                del request.headers["x-amz-checksum-sha256"]
                del request.headers["x-amz-sdk-checksum-algorithm"]

    client.meta.events.register("before-send.s3.PutObject", corrupt_users_csv)
    with pytest.raises(ArchiveIntegrityError, match="write verification failed") as caught:
        _archive(backend.archive, stage(DELIVERY_FILES))
    client.meta.events.unregister("before-send.s3.PutObject", corrupt_users_csv)

    if server_keeps_checksum:
        _assert_names_without_content(caught.value)
    else:
        _assert_names_both_versions_without_content(caught.value)
    assert f"rosters/{FOLDER}/users.csv" not in backend.keys()
    retry = _archive(backend.archive, stage(DELIVERY_FILES))
    assert retry.newly_written == 2  # users.csv and the manifest


def test_reports_are_attached_beside_the_delivery_content_addressed(backend: Backend, stage: Stage) -> None:
    delivery = _archive(backend.archive, stage(DELIVERY_FILES))
    first = backend.archive.attach_report(DISTRICT, DELIVERY, DELIVERED_AT, "diagnostics.json", b'{"n": 1}')
    again = backend.archive.attach_report(DISTRICT, DELIVERY, DELIVERED_AT, "diagnostics.json", b'{"n": 1}')
    other = backend.archive.attach_report(DISTRICT, DELIVERY, DELIVERED_AT, "diagnostics.json", b'{"n": 2}')
    assert first == again != other
    folder = delivery.manifest_uri.rsplit("/", 1)[0]
    assert first.startswith(f"{folder}/reports/diagnostics-") and first.endswith(".json")
    assert _read_users(backend) == DELIVERY_FILES["users.csv"]  # the delivery itself is untouched
