"""Thin Dagster resources around the connectors, and the one function that picks them per environment.

Secrets (the LMS token, SFTP passwords named in the registry) come from the environment at run
time (`dg.EnvVar` or the registry's `*_env` references); nothing here reads the network at import.
"""


import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from rostersync_assets.connectors.archive import DeliveryArchive, LocalArchive, S3Archive
from rostersync_assets.connectors.delivery import StagedDelivery
from rostersync_assets.connectors.ledger import SyncLedger, ledger_url, masked
from rostersync_assets.connectors.lms_client import LmsClient
from rostersync_assets.connectors.rest_delivery import delta_since, stage_rest_delivery
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
        if district.sftp is None:
            raise ValueError(f"district {district.slug} has no sftp source (it is pulled over OneRoster REST)")
        return SftpConnector(district.sftp.endpoint(), district.sftp.credentials(), timeout_s=self.timeout_s)


class RestSourceResource(dg.ConfigurableResource):
    """Pulls a REST district's roster from its OneRoster provider (secrets from the registry's `*_env`)
    into staging; how patient the client is with a slow or throttling provider is set here."""

    timeout_s: float = 30.0
    max_attempts: int = 5
    backoff_base_s: float = 0.5

    def stage(self, district: District, staging_root: Path, ledger: SyncLedger) -> StagedDelivery:
        """A bulk pull, or with `rest.delta` a delta since the last pull the LMS fully acknowledged."""
        if district.rest is None:
            raise ValueError(f"district {district.slug} has no rest source (it delivers over SFTP)")
        since = delta_since(ledger.runs(district.slug)) if district.rest.delta else None
        client = district.rest.client(timeout_s=self.timeout_s, max_attempts=self.max_attempts, backoff_base_s=self.backoff_base_s)
        try:
            return stage_rest_delivery(
                client, district=district.slug, source=district.rest.describe(), staging_root=staging_root, since=since
            )
        finally:
            client.close()


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
    """The LMS REST API (its token from the environment), how writes are batched and how hard it is pushed.

    `max_concurrency` bounds the batches one sync has in flight against this LMS (the `lms` pool
    bounds how many syncs run at once); retries back off exponentially from `backoff_base_s`.
    """

    base_url: str
    token: str
    batch_size: int = 500
    max_concurrency: int = 4
    timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_base_s: float = 0.5

    def client(self) -> LmsClient:
        return LmsClient(
            self.base_url,
            self.token,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            backoff_base_s=self.backoff_base_s,
        )


class LedgerResource(dg.ConfigurableResource):
    """The ledger of LMS writes and approvals, and the per-district sync state.

    `url` is any SQLAlchemy URL (a SQLite file by default; PostgreSQL in production, where it comes
    from ROSTERSYNC_LEDGER_URL and may hold a password: only its masked form is ever shown).
    """

    url: str
    _ledger: SyncLedger | None = PrivateAttr(default=None)

    def open(self) -> SyncLedger:
        """One SyncLedger (one connection pool) per run and process, closed when the run ends."""
        if self._ledger is None:
            self._ledger = SyncLedger(self.url)
        return self._ledger

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._ledger is not None:
            self._ledger.close()

    def __repr__(self) -> str:
        # Before Dagster resolves it, the field holds the EnvVar (its name, not yet a URL).
        shown = f"EnvVar({self.url.env_var_name!r})" if isinstance(self.url, dg.EnvVar) else repr(masked(self.url))
        return f"LedgerResource(url={shown})"

    __str__ = __repr__


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
    ledger = LedgerResource(
        url=dg.EnvVar("ROSTERSYNC_LEDGER_URL") if env == "prod" else ledger_url(home.ledger_path).render_as_string()
    )
    return {
        "home": HomeResource(home=str(home.root)),
        "sftp": SftpResource(),
        "rest": RestSourceResource(),
        "archive": archive,
        "lms": LmsResource(base_url=dg.EnvVar("ROSTERSYNC_LMS_URL"), token=dg.EnvVar("ROSTERSYNC_LMS_TOKEN")),
        "ledger": ledger,
        "roster_io_manager": RosterIOManager(base_path=str(home.tables_dir)),
    }
