"""The SFTP sensor: one look at every registered district's folder per tick, a run per new delivery."""


import json
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from rostersync_assets.connectors.delivery import WatchState, watch_step
from rostersync_assets.connectors.sftp import RemoteFile
from rostersync_assets.defs.partitions import DISTRICT_TAG, districts_partitions
from rostersync_assets.defs.resources import HomeResource, SftpResource
from rostersync_assets.registry import District

sync_district_roster = dg.define_asset_job(
    "sync_district_roster",
    selection=dg.AssetSelection.all(),
    description="Carry one district's latest complete delivery from its SFTP server to the LMS.",
)

MAX_PARALLEL_LISTINGS = 16


def _list(sftp: SftpResource, district: District) -> list[RemoteFile]:
    with sftp.connect(district) as connector:
        return connector.list_files()


@dg.sensor(
    job=sync_district_roster,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Lists every registered district's SFTP folder; requests one run per new complete delivery "
        "(manifest.csv present, listing unchanged since the previous look). Registers new districts "
        "as partitions. A district whose server fails is reported and does not stop the others."
    ),
)
def sftp_delivery_sensor(
    context: dg.SensorEvaluationContext, home: HomeResource, sftp: SftpResource
) -> dg.SensorResult:
    registry = home.registry()
    cursor: dict[str, dict[str, str | None]] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(districts_partitions.name))
    districts = sorted(registry.districts.values(), key=lambda d: d.slug)

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_LISTINGS, max(1, len(districts)))) as pool:
        futures = {d.slug: pool.submit(_list, sftp, d) for d in districts}

    run_requests, failures, new_cursor = [], [], {}
    for district in districts:
        state = WatchState(**cursor.get(district.slug, {}))
        try:
            files = futures[district.slug].result()
        except Exception as error:  # one district's outage must not stop the others
            failures.append(district.slug)
            context.log.error(f"district {district.slug}: listing failed: {type(error).__name__}: {error}")
            new_cursor[district.slug] = state.__dict__
            continue
        state, fingerprint = watch_step(state, files)
        new_cursor[district.slug] = state.__dict__
        if fingerprint is not None:
            run_requests.append(
                dg.RunRequest(
                    run_key=f"{district.slug}:{fingerprint[:16]}",
                    partition_key=district.slug,
                    tags={DISTRICT_TAG: district.slug, "rostersync/listing": fingerprint[:16]},
                )
            )
    new_slugs = sorted(set(registry.districts) - known)
    if failures:
        context.log.warning(f"{len(failures)} district(s) could not be listed: {', '.join(failures)}")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[districts_partitions.build_add_request(new_slugs)] if new_slugs else [],
        cursor=json.dumps(new_cursor, sort_keys=True),
    )
