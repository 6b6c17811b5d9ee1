"""A district's delivery on its SFTP server: when it is complete, what it is called, staging it locally.

A delivery is the set of files in the district's remote folder: loose OneRoster files, Clever's
files, or one zip holding either. It is complete once `manifest.csv` (for Clever's format every
Clever file; for a zip the zip alone) is there and two listings in a row see the same names, sizes
and mtimes (a file still being uploaded grows between looks) - or, for a district that writes a
marker file last (`ready_marker` in the registry), once that marker is there and newer than every
file. Its id is derived from its content, so the same files always get the same id and re-archiving
them is a verified no-op.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rostersync_assets.connectors.sftp import RemoteFile, SftpConnector, UnsafeFileName, validate_file_name
from rostersync_assets.oneroster.clever import is_complete_clever_delivery
from rostersync_assets.oneroster.spec import MANIFEST_FILE


def split_listing(files: Sequence[RemoteFile]) -> tuple[list[RemoteFile], list[str]]:
    """(files that belong to the delivery, names left out): hidden files such as `.DS_Store` or an
    uploader's `.part` temp file, and names that could escape the folder, are never downloaded."""
    kept, left_out = [], []
    for remote in files:
        try:
            validate_file_name(remote.name)
        except UnsafeFileName:
            left_out.append(remote.name)
        else:
            kept.append(remote)
    return kept, left_out


def listing_fingerprint(files: Sequence[RemoteFile]) -> str:
    """A digest of a folder listing (names, sizes, mtimes): equal listings, equal fingerprints."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        digest.update(f"{f.name}\x1f{f.size}\x1f{f.mtime}\x1e".encode())
    return digest.hexdigest()


def has_manifest(files: Sequence[RemoteFile]) -> bool:
    """Whether the files mark a complete delivery: OneRoster 1.1+ packages carry manifest.csv (producers
    write it last, so it marks the end); Clever's format has none, so all of its files must be there."""
    names = [f.name for f in files]
    return MANIFEST_FILE in names or is_complete_clever_delivery(names)


def is_zip_delivery(files: Sequence[RemoteFile]) -> bool:
    """Whether the delivery is one zip (the OneRoster readers open it in memory)."""
    return len(files) == 1 and files[0].name.lower().endswith(".zip")


def delivery_files(files: Sequence[RemoteFile], ready_marker: str | None = None) -> tuple[list[RemoteFile], list[str]]:
    """(the files that make up the delivery, names left out): split_listing without the marker file,
    which only signals completeness and is not part of what the district delivers."""
    kept, left_out = split_listing(files)
    return [f for f in kept if f.name != ready_marker], left_out


def is_complete(files: Sequence[RemoteFile], ready_marker: str | None = None) -> bool:
    """Whether a listing holds a complete delivery by what is there (not whether it is still changing).

    With a `ready_marker` the district signals completeness itself: the marker must be there and at
    least as new as every file, so last night's marker does not bless tonight's half-done upload.
    Without one: manifest.csv, a complete Clever set, or a single zip.
    """
    delivered, _ = delivery_files(files, ready_marker)
    if ready_marker is not None:
        marker = next((f for f in files if f.name == ready_marker), None)
        return marker is not None and bool(delivered) and all(f.mtime <= marker.mtime for f in delivered)
    return has_manifest(delivered) or is_zip_delivery(delivered)


def delivery_id_for(delivered_at: datetime, file_hashes: dict[str, str]) -> str:
    """`<UTC time of the newest file>-<12 hex of the content digest>`: sortable and content-addressed."""
    digest = hashlib.sha256()
    for name in sorted(file_hashes):
        digest.update(f"{name}\x1f{file_hashes[name]}\x1e".encode())
    return f"{delivered_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class StagedFile:
    name: str
    size: int
    sha256: str
    path: Path


@dataclass(frozen=True)
class StagedDelivery:
    """A delivery downloaded to local staging, ready to be archived."""

    district: str
    delivery_id: str
    delivered_at: datetime
    source: str
    files: tuple[StagedFile, ...]
    left_out: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class DeliveryNotReady(ValueError):
    """The folder holds no complete delivery right now (missing manifest, a half-uploaded zip, files that
    changed while being downloaded); the next listing will look again."""


def stage_delivery(
    connector: SftpConnector, *, district: str, source: str, staging_root: Path, ready_marker: str | None = None
) -> StagedDelivery:
    """Download every file of the district's folder into `staging_root/<district>/<delivery-id>/`.

    The folder is listed again after the downloads: any file whose size or mtime changed meanwhile
    means the district was still writing, and nothing is staged (DeliveryNotReady).
    """
    listing = connector.list_files()
    files, left_out = delivery_files(listing, ready_marker)
    if not is_complete(listing, ready_marker):
        wanted = f"the marker file {ready_marker} newer than every file" if ready_marker else (
            f"{MANIFEST_FILE}, a complete Clever set or a single zip"
        )
        raise DeliveryNotReady(f"district {district}: the delivery in {source} is not complete: no {wanted}")
    work = staging_root / district / f".incoming-{uuid.uuid4().hex}"
    work.mkdir(parents=True)
    try:
        hashes, sizes = _download_all(connector, files, work)
        _check_unchanged(connector, listing, district=district, source=source)
        if is_zip_delivery(files) and not zipfile.is_zipfile(work / files[0].name):
            raise DeliveryNotReady(
                f"district {district}: {files[0].name} in {source} is not a complete zip archive "
                "(no central directory: still being uploaded?)"
            )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    delivered_at = datetime.fromtimestamp(max(f.mtime for f in files), UTC)
    delivery_id = delivery_id_for(delivered_at, hashes)
    final = staging_root / district / delivery_id
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    staged = tuple(StagedFile(name, sizes[name], hashes[name], final / name) for name in sorted(hashes))
    return StagedDelivery(district, delivery_id, delivered_at, source, staged, tuple(left_out))


def _download_all(connector: SftpConnector, files: Sequence[RemoteFile], work: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Download each file (verified by size, hashed); returns (sha256 by name, size by name)."""
    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for remote in files:
        sizes[remote.name], hashes[remote.name] = connector.download(remote.name, work / remote.name)
    return hashes, sizes


def _check_unchanged(connector: SftpConnector, before: Sequence[RemoteFile], *, district: str, source: str) -> None:
    """Raise DeliveryNotReady naming the files whose size or mtime changed since `before` was listed."""
    after = connector.list_files()
    if listing_fingerprint(after) == listing_fingerprint(before):
        return
    changed = sorted({f.name for f in set(after) ^ set(before)})
    raise DeliveryNotReady(
        f"district {district}: files changed in {source} while the delivery was downloaded "
        f"({', '.join(changed)}); it is still being written"
    )


@dataclass(frozen=True)
class WatchState:
    """What the sensor remembers of one district: the last listing seen and the last one requested."""

    seen: str | None = None
    requested: str | None = None


def watch_step(
    state: WatchState, files: Sequence[RemoteFile], ready_marker: str | None = None
) -> tuple[WatchState, str | None]:
    """Advance a district's watch with a new listing; returns the listing fingerprint to sync, if any.

    A delivery is ready when it is complete (`is_complete`), it is not the delivery already
    requested, and - unless the district's marker file vouches for it - the listing is identical to
    the previous look (every name, size and mtime: nothing is still being written).
    """
    fingerprint = listing_fingerprint(files)
    settled = ready_marker is not None or fingerprint == state.seen
    ready = is_complete(files, ready_marker) and settled and fingerprint != state.requested
    return WatchState(seen=fingerprint, requested=fingerprint if ready else state.requested), (fingerprint if ready else None)
