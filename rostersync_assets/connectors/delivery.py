"""A district's delivery on its SFTP server: when it is complete, what it is called, staging it locally.

A delivery is the set of files in the district's remote folder. It is complete once `manifest.csv`
(or, for Clever's format, every Clever file) is there and two listings in a row see the same names, sizes and mtimes (a file still being
uploaded grows between looks). Its id is derived from its content, so the same files always get the
same id and re-archiving them is a verified no-op.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
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


def stage_delivery(connector: SftpConnector, *, district: str, source: str, staging_root: Path) -> StagedDelivery:
    """Download every file of the district's folder into `staging_root/<district>/<delivery-id>/`.

    Raises ValueError when the folder holds no complete delivery (no manifest.csv).
    """
    listing, left_out = split_listing(connector.list_files())
    if not has_manifest(listing):
        raise ValueError(
            f"district {district}: no {MANIFEST_FILE} (nor a complete Clever set) in {source}; the delivery is not complete"
        )
    work = staging_root / district / f".incoming-{uuid.uuid4().hex}"
    work.mkdir(parents=True)
    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for remote in listing:
        sizes[remote.name], hashes[remote.name] = connector.download(remote.name, work / remote.name)
    delivered_at = datetime.fromtimestamp(max(f.mtime for f in listing), UTC)
    delivery_id = delivery_id_for(delivered_at, hashes)
    final = staging_root / district / delivery_id
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    files = tuple(StagedFile(name, sizes[name], hashes[name], final / name) for name in sorted(hashes))
    return StagedDelivery(district, delivery_id, delivered_at, source, files, tuple(left_out))


@dataclass(frozen=True)
class WatchState:
    """What the sensor remembers of one district: the last listing seen and the last one requested."""

    seen: str | None = None
    requested: str | None = None


def watch_step(state: WatchState, files: Sequence[RemoteFile]) -> tuple[WatchState, str | None]:
    """Advance a district's watch with a new listing; returns the listing fingerprint to sync, if any.

    A delivery is ready when manifest.csv is present, the listing is identical to the previous look
    (nothing is still being written), and it is not the delivery already requested.
    """
    fingerprint = listing_fingerprint(files)
    ready = has_manifest(files) and fingerprint == state.seen and fingerprint != state.requested
    return WatchState(seen=fingerprint, requested=fingerprint if ready else state.requested), (fingerprint if ready else None)
