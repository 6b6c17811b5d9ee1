"""What onboarding proves about a district's SFTP folder before it is registered, without writing anything.

`districts add` and `districts test` share it: the server's host key against what the admin confirmed,
the login, the folder listing, and whether the folder holds a complete delivery that the nightly
rules accept (staged into a throwaway folder and judged by the same reader and validator as
`rostersync validate` and the nightly run). Dagster-free.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rostersync_assets.connectors.delivery import DeliveryNotReady, is_complete, listing_fingerprint, stage_delivery
from rostersync_assets.connectors.sftp import SftpConnector, SftpCredentials, host_key_fingerprint
from rostersync_assets.oneroster.formats import read_delivery
from rostersync_assets.oneroster.report import verdict
from rostersync_assets.oneroster.validate import validate_package
from rostersync_assets.registry import District


class FingerprintRefused(ValueError):
    """The offered host key is not the one the admin expects: nothing is pinned, nothing is sent."""


def check_fingerprint(offered_key_line: str, expected: str, *, host: str, port: int) -> str:
    """The offered key's fingerprint if it equals `expected` (`SHA256:...`, as `ssh-keygen -lf` prints)."""
    offered = host_key_fingerprint(offered_key_line)
    wanted = expected.strip()
    if not wanted.startswith("SHA256:"):
        raise FingerprintRefused(f"--host-key-fingerprint must look like SHA256:<base64>, not {wanted!r}")
    if offered.rstrip("=") != wanted.rstrip("="):
        raise FingerprintRefused(
            f"{host}:{port} offered host key {offered_key_line.split()[0]} {offered}, not the expected {wanted}: "
            "refusing to pin it (ask the district which fingerprint their server has: `ssh-keygen -lf` on its host key)"
        )
    return offered


@dataclass(frozen=True)
class Readiness:
    """What the folder holds now: file count, whether a complete delivery is there and what the rules say."""

    files: int
    complete: bool
    accepted: bool
    verdict: str
    delivery_id: str | None = None
    # The listing's fingerprint, as the sensor computes it: runs tagged with it are not requested again.
    listing: str | None = None

    def describe(self) -> str:
        if not self.complete:
            return f"{self.files} file(s) in the folder, no complete delivery yet ({self.verdict})"
        return f"{self.files} file(s) in the folder; delivery {self.delivery_id}: {self.verdict}"


def probe_folder(district: District, credentials: SftpCredentials, *, timeout_s: float = 15.0) -> Readiness:
    """Log in with the pinned key, list the folder and judge a complete delivery (nothing kept)."""
    source = district.sftp
    assert source is not None, "probe_folder needs an SFTP district"
    where = f"sftp://{source.username}@{source.host}:{source.port}{source.remote_dir}"
    with SftpConnector(source.endpoint(), credentials, timeout_s=timeout_s) as connector:
        listing = connector.list_files()
        if not is_complete(listing, source.ready_marker):
            needed = f"marker {source.ready_marker}" if source.ready_marker else "manifest.csv, a complete Clever set or one zip"
            return Readiness(len(listing), False, False, f"waiting for {needed}", listing=listing_fingerprint(listing))
        with tempfile.TemporaryDirectory(prefix="rostersync-onboarding-") as scratch:
            try:
                staged = stage_delivery(
                    connector, district=district.slug, source=where, staging_root=Path(scratch),
                    ready_marker=source.ready_marker,
                )
            except DeliveryNotReady as error:
                return Readiness(len(listing), False, False, str(error), listing=listing_fingerprint(listing))
            package = read_delivery({f.name: f.path.read_bytes() for f in staged.files}, district.profile)
    report = validate_package(package, profile=district.profile)
    return Readiness(len(listing), True, report.accepted, verdict(report), staged.delivery_id, listing_fingerprint(listing))
