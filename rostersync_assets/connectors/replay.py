"""An archived delivery brought back to staging, so the pipeline can run on it again (`rostersync replay`).

Rebuilding or re-syncing a past night must use exactly the bytes that arrived that night, not what
the district's server holds today: the files come from the write-once archive, each checked against
the archive's manifest (sha256) as it is read. The staged result is the same `StagedDelivery` a
download produces, so archiving it again is a verified no-op and everything downstream is unchanged.
Dagster-free.
"""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from rostersync_assets.connectors.archive import DeliveryArchive
from rostersync_assets.connectors.delivery import StagedDelivery, StagedFile

_DELIVERY_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{12}$")


def delivered_at_of(delivery_id: str) -> datetime:
    """The delivery time encoded in its id (`<UTC time>-<12 hex>`), which places it in the archive."""
    match = _DELIVERY_ID.fullmatch(delivery_id)
    if match is None:
        raise ValueError(f"delivery id {delivery_id!r} is not of the form YYYYMMDDTHHMMSSZ-<12 hex digits>")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def restore_delivery(archive: DeliveryArchive, *, district: str, delivery_id: str, staging_root: Path) -> StagedDelivery:
    """Copy the archived delivery into `staging_root/<district>/<delivery-id>/` (verified, atomic).

    Raises FileNotFoundError naming the district and delivery when it is not archived, and
    ArchiveIntegrityError when archived bytes no longer match the manifest.
    """
    delivered_at = delivered_at_of(delivery_id)
    try:
        manifest = archive.load_manifest(district, delivery_id, delivered_at)
    except FileNotFoundError:
        raise FileNotFoundError(f"district {district}: delivery {delivery_id} is not in the archive") from None
    work = staging_root / district / f".replay-{uuid.uuid4().hex}"
    work.mkdir(parents=True)
    try:
        files = []
        for entry in manifest["files"]:
            body = archive.read(district, delivery_id, delivered_at, entry["name"])
            (work / entry["name"]).write_bytes(body)
            files.append((entry["name"], len(body), entry["sha256"]))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    final = staging_root / district / delivery_id
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    return StagedDelivery(
        district=district,
        delivery_id=delivery_id,
        delivered_at=datetime.fromisoformat(manifest["delivered_at"]),
        source=str(manifest["source"]),
        files=tuple(StagedFile(name, size, sha256, final / name) for name, size, sha256 in files),
    )
