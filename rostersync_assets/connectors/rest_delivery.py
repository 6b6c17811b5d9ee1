"""A OneRoster REST pull staged as a delivery: every page as received, plus a small pull manifest.

The pages are the raw delivery (`<endpoint>-page-00001.json`, ...) and `rest-pull.json` says what
was pulled (version, endpoints, page files and record counts, bulk or delta, the filter used), so
the archive keeps a REST delivery exactly as it keeps an SFTP one (same StagedDelivery, same id
rule) and oneroster/rest_json.py can read it back into the same tables. A pull that fails part way
stages nothing: a partial snapshot must never be read as "everyone else is gone".

Delta pulls ask for `dateLastModified>'<start of the last pull the LMS fully acknowledged>'`: the
time is the one embedded in that delivery's id (a pull's id starts with its start time). Overlap
is harmless (unchanged records diff to nothing); a gap would lose changes, so an uncertain night
(failed writes, no run yet) falls back to an earlier pull or to a bulk pull.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rostersync_assets.connectors.delivery import StagedDelivery, StagedFile, delivery_id_for
from rostersync_assets.connectors.oneroster_rest import ENDPOINTS, EndpointMissing, OneRosterRestClient, delta_filter
from rostersync_assets.oneroster.rest_json import PULL_MANIFEST

_ACKNOWLEDGED = frozenset({"created", "updated", "unchanged", "deactivated"})


def page_file_name(endpoint: str, number: int) -> str:
    """`users-page-00001.json`: one flat name per page (archive keys are one path segment)."""
    return f"{endpoint}-page-{number:05d}.json"


def delta_since(runs: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The start of the newest pull whose sync the LMS fully acknowledged, from the ledger's runs
    (newest first); None when there is none, and the pull must be bulk."""
    for run in runs:
        counts = run.get("counts") or {}
        if counts and set(counts) <= _ACKNOWLEDGED:
            try:
                return datetime.strptime(str(run["delivery_id"]).split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                continue
    return None


def stage_rest_delivery(
    client: OneRosterRestClient,
    *,
    district: str,
    source: str,
    staging_root: Path,
    since: datetime | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> StagedDelivery:
    """Pull every rostering collection into `staging_root/<district>/<delivery-id>/` (delta when `since`)."""
    pulled_at = clock().replace(microsecond=0)
    filter = delta_filter(since) if since is not None else None
    work = staging_root / district / f".incoming-{uuid.uuid4().hex}"
    work.mkdir(parents=True)
    try:
        endpoints = _pull(client, filter, work)
        manifest = {
            "format": "oneroster-rest",
            "version": client.version,
            "base_url": client.root,
            "mode": "delta" if filter else "bulk",
            "filter": filter,
            "pulled_at": pulled_at.isoformat(),
            "page_size": client.page_size,
            "capped_limits": client.stats.capped_limits,
            "requests": client.stats.requests,
            "retries": client.stats.retries,
            "endpoints": endpoints,
        }
        (work / PULL_MANIFEST).write_bytes(json.dumps(manifest, indent=2).encode())
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    described = {item.name: (item.stat().st_size, hashlib.sha256(item.read_bytes()).hexdigest()) for item in work.iterdir()}
    delivery_id = delivery_id_for(pulled_at, {name: sha for name, (_, sha) in described.items()})
    final = staging_root / district / delivery_id
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    files = tuple(StagedFile(name, size, sha, final / name) for name, (size, sha) in sorted(described.items()))
    return StagedDelivery(district, delivery_id, pulled_at, source, files)


def _pull(client: OneRosterRestClient, filter: str | None, work: Path) -> dict[str, dict[str, Any]]:
    """Write each page of each collection; returns per endpoint its page files, their record counts
    (so a finding at line N of the entity's table can be traced to its page) and the total."""
    endpoints: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        names, counts = [], []
        try:
            for page in client.pages(endpoint, filter):
                name = page_file_name(endpoint, page.number)
                (work / name).write_bytes(page.body)
                names.append(name)
                counts.append(len(page.records))
        except EndpointMissing:
            continue
        endpoints[endpoint] = {"files": names, "page_records": counts, "records": sum(counts)}
    return endpoints
