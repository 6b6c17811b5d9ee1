"""Thin Dagster resources around the connectors, and the one function that picks them per environment.

Secrets (the LMS token, SFTP passwords named in the registry) come from the environment at run
time (`dg.EnvVar` or the registry's `*_env` references); nothing here reads the network at import.
"""


import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from rostersync_assets.connectors.archive import DeliveryArchive, LocalArchive, S3Archive
from rostersync_assets.connectors.ledger import SyncLedger
from rostersync_assets.connectors.lms_client import LmsClient
from rostersync_assets.connectors.sftp import SftpConnector
from rostersync_assets.defs.io_manager import RosterIOManager
from rostersync_assets.home import RostersyncHome
from rostersync_assets.registry import District, DistrictRegistry


class HomeResource(dg.ConfigurableResource):
    """The installation's home folder: the district registry and local working folders."""

    home: str

    @property
    def paths(self) -> RostersyncHome:
        return RostersyncHome(root=Path(self.home))

    def registry(self) -> DistrictRegistry:
        return DistrictRegistry.load(self.paths.registry_path)

    def district(self, slug: str) -> District:
        return self.registry().get(slug)


class SftpResource(dg.ConfigurableResource):
    """Opens a host-key-pinned SFTP session to a district's server with its registered credentials."""

    timeout_s: float = 15.0

    def connect(self, district: District) -> SftpConnector:
        return SftpConnector(district.sftp.endpoint(), district.sftp.credentials(), timeout_s=self.timeout_s)


class ArchiveResource(dg.ConfigurableResource):
    """Where raw deliveries are kept, immutable and checksummed; subclasses choose the backend."""

    def open(self) -> DeliveryArchive:
        raise NotImplementedError


class LocalArchiveResource(ArchiveResource):
    """A local folder: the embedded default of a demo or a single-machine installation."""

    root: str

    def open(self) -> DeliveryArchive:
        return LocalArchive(Path(self.root))


class S3ArchiveResource(ArchiveResource):
    """An S3 (or S3-compatible, through `s3.endpoint_url`) bucket with server-side encryption."""

    s3: S3Resource
    bucket: str
    prefix: str = ""
    sse: str = "AES256"
    kms_key_id: str | None = None

    def open(self) -> DeliveryArchive:
        return S3Archive(self.s3.get_client(), self.bucket, self.prefix, sse=self.sse, kms_key_id=self.kms_key_id)


class LmsResource(dg.ConfigurableResource):
    """The LMS REST API (its token from the environment) and how writes are batched."""

    base_url: str
    token: str
    batch_size: int = 500
    timeout_s: float = 30.0

    def client(self) -> LmsClient:
        return LmsClient(self.base_url, self.token, timeout_s=self.timeout_s)


class LedgerResource(dg.ConfigurableResource):
    """The ledger of LMS writes and the per-district sync state (SQLite file)."""

    path: str

    def open(self) -> SyncLedger:
        return SyncLedger(Path(self.path))


def build_resources(env: str, home: RostersyncHome) -> dict[str, object]:
    """Every resource for one environment: `local` (embedded defaults) or `prod` (S3 archive)."""
    if env not in ("local", "prod"):
        raise ValueError(f"ROSTERSYNC_ENV must be 'local' or 'prod', not {env!r}")
    if env == "prod":
        archive: ArchiveResource = S3ArchiveResource(
            s3=S3Resource(endpoint_url=os.environ.get("ROSTERSYNC_S3_ENDPOINT_URL") or None),
            bucket=dg.EnvVar("ROSTERSYNC_ARCHIVE_BUCKET"),
            prefix=os.environ.get("ROSTERSYNC_ARCHIVE_PREFIX", ""),
        )
    else:
        archive = LocalArchiveResource(root=str(home.archive_dir))
    return {
        "home": HomeResource(home=str(home.root)),
        "sftp": SftpResource(),
        "archive": archive,
        "lms": LmsResource(base_url=dg.EnvVar("ROSTERSYNC_LMS_URL"), token=dg.EnvVar("ROSTERSYNC_LMS_TOKEN")),
        "ledger": LedgerResource(path=str(home.ledger_path)),
        "roster_io_manager": RosterIOManager(base_path=str(home.tables_dir)),
    }
