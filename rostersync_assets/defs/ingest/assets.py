"""Ingest: a district's delivery downloaded from its SFTP server, then archived before it is judged."""


from datetime import datetime
from pathlib import Path

import dagster as dg

from rostersync_assets.connectors.delivery import StagedDelivery, stage_delivery
from rostersync_assets.connectors.replay import restore_delivery
from rostersync_assets.defs.partitions import OWNERS, districts_partitions
from rostersync_assets.defs.resources import ArchiveResource, HomeResource, LedgerResource, RestSourceResource, SftpResource
from rostersync_assets.registry import District


class RawDeliveryConfig(dg.Config):
    """`replay_delivery_id`: stage this archived delivery instead of asking the district's server
    (`rostersync replay`), to rebuild or re-sync a past night from exactly the bytes it delivered."""

    replay_delivery_id: str | None = None


@dg.asset(
    partitions_def=districts_partitions,
    group_name="ingest",
    kinds={"sftp", "rest"},
    owners=OWNERS,
    io_manager_key="roster_io_manager",
    description=(
        "The district's current complete OneRoster delivery (loose files or one zip), downloaded over SFTP "
        "(host key pinned; dropped connections resumed) to local staging, with each file's size and sha256 "
        "and a content-derived delivery id. Fails, staging nothing, if the folder changed during the download. "
        "A OneRoster REST district's delivery is its pulled pages (JSON, as received) and rest-pull.json."
    ),
)
def raw_roster_delivery(
    context: dg.AssetExecutionContext,
    config: RawDeliveryConfig,
    home: HomeResource,
    sftp: SftpResource,
    rest: RestSourceResource,
    ledger: LedgerResource,
    archive: ArchiveResource,
) -> dg.Output[dict]:
    district = home.district(context.partition_key)
    if config.replay_delivery_id:
        staged, reconnects = restore_delivery(
            archive.open(), district=district.slug, delivery_id=config.replay_delivery_id, staging_root=home.paths.staging_dir
        ), 0
    elif district.rest is not None:
        # A OneRoster REST district: the pulled pages are its delivery (JSON pages + rest-pull.json).
        staged, reconnects = rest.stage(district, home.paths.staging_dir, ledger.open()), 0
    else:
        staged, reconnects = _stage_over_sftp(district, sftp, home.paths.staging_dir)
    context.log.info(f"district {district.slug}: staged delivery {staged.delivery_id} ({len(staged.files)} files, {staged.total_bytes} bytes)")
    descriptor = {
        "district": staged.district,
        "delivery_id": staged.delivery_id,
        "delivered_at": staged.delivered_at.isoformat(),
        "source": staged.source,
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256, "path": str(f.path)} for f in staged.files],
    }
    return dg.Output(
        descriptor,
        metadata={
            "delivery_id": staged.delivery_id,
            "file_count": len(staged.files),
            "bytes": staged.total_bytes,
            "files_left_out": ", ".join(staged.left_out) or "none",
            "sftp_reconnects": reconnects,
            "files": dg.MetadataValue.md(
                "| file | bytes | sha256 |\n|---|---|---|\n"
                + "\n".join(f"| {f.name} | {f.size} | {f.sha256[:16]}… |" for f in staged.files)
            ),
        },
    )


def _stage_over_sftp(district: District, sftp: SftpResource, staging_root: Path) -> tuple[StagedDelivery, int]:
    """(the staged delivery, SFTP reconnects it took) for a district delivering over SFTP."""
    source = f"sftp://{district.sftp.username}@{district.sftp.host}:{district.sftp.port}{district.sftp.remote_dir}"
    with sftp.connect(district) as connector:
        staged = stage_delivery(
            connector,
            district=district.slug,
            source=source,
            staging_root=staging_root,
            ready_marker=district.sftp.ready_marker,
        )
        return staged, connector.reconnects


@dg.asset(
    partitions_def=districts_partitions,
    group_name="ingest",
    kinds={"s3"},
    owners=OWNERS,
    io_manager_key="roster_io_manager",
    description=(
        "The delivery written once to the archive (<district>/<YYYY>/<MM>/<DD>/<delivery-id>/) with a "
        "manifest.json, checksums verified after writing; nothing delivered is lost, even if it is rejected."
    ),
)
def archived_roster_delivery(
    context: dg.AssetExecutionContext, raw_roster_delivery: dict, archive: ArchiveResource
) -> dg.Output[dict]:
    archived = archive.open().archive(
        district=raw_roster_delivery["district"],
        delivery_id=raw_roster_delivery["delivery_id"],
        delivered_at=datetime.fromisoformat(raw_roster_delivery["delivered_at"]),
        source=raw_roster_delivery["source"],
        files={f["name"]: Path(f["path"]) for f in raw_roster_delivery["files"]},
    )
    descriptor = {
        "district": archived.district,
        "delivery_id": archived.delivery_id,
        "delivered_at": archived.delivered_at.isoformat(),
        "manifest_uri": archived.manifest_uri,
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256, "uri": f.uri} for f in archived.files],
    }
    return dg.Output(
        descriptor,
        metadata={
            "delivery_id": archived.delivery_id,
            "file_count": len(archived.files),
            "bytes": sum(f.size for f in archived.files),
            "objects_written": archived.newly_written,
            "manifest": dg.MetadataValue.path(archived.manifest_uri),
        },
    )
