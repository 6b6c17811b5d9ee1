"""Read an archived OneRoster REST pull (JSON pages + `rest-pull.json`) into the same tables as a CSV delivery.

The pages are turned into the CSV files the provider would have exported (v1p1 -> the 1.1 layout,
v1p2 -> the 1.2 layout with `roles.csv` built from each user's embedded roles) and read by the CSV
reader, so every rule, fix, check, diff and sync applies to REST districts unchanged. Nested
references (`{"sourcedId": ..., "type": ...}`) become the `*SourcedId(s)` columns, lists become
comma-joined cells, JSON booleans become `true`/`false`.

A bulk pull is a full snapshot: status and dateLastModified are left blank as a bulk CSV leaves them,
except `tobedeleted`, which keeps the record out of the snapshot. A delta pull keeps both (required).
Findings, tables and the ledger name the entity's CSV file and line as for a CSV delivery: line N
of `users.csv` is the pull's (N-1)th user record in page order (`rest-pull.json` lists each page's
record count, so the page and position follow). For v1p2, `roles.csv` holds one row per embedded role.

`FIELDS` is the single description of the JSON <-> CSV mapping; the local provider
(sandbox/oneroster_provider.py) serves the repository's CSV test data through it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from rostersync_assets.oneroster import spec, versions
from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile
from rostersync_assets.oneroster.reader import RosterPackage, read_package, uninterpretable

PULL_MANIFEST = "rest-pull.json"
CSV_VERSIONS = {"v1p1": "1.1", "v1p2": "1.2"}

# How a CSV column is found in a JSON record: "field" (scalar), "ref:field" (one reference object),
# "refs:field" (a list of references), "list:field" (a list of scalars), "userIds" ({type, identifier} list).
_COMMON = {"sourcedId": "sourcedId", "status": "status", "dateLastModified": "dateLastModified"}
FIELDS: dict[str, dict[str, str]] = {
    "orgs": {**_COMMON, "name": "name", "type": "type", "identifier": "identifier", "parentSourcedId": "ref:parent"},
    "academicSessions": {
        **_COMMON, "title": "title", "type": "type", "startDate": "startDate", "endDate": "endDate",
        "parentSourcedId": "ref:parent", "schoolYear": "schoolYear",
    },
    "courses": {
        **_COMMON, "schoolYearSourcedId": "ref:schoolYear", "title": "title", "courseCode": "courseCode",
        "grades": "list:grades", "orgSourcedId": "ref:org", "subjects": "list:subjects",
        "subjectCodes": "list:subjectCodes",
    },
    "classes": {
        **_COMMON, "title": "title", "grades": "list:grades", "courseSourcedId": "ref:course",
        "classCode": "classCode", "classType": "classType", "location": "location", "schoolSourcedId": "ref:school",
        "termSourcedIds": "refs:terms", "subjects": "list:subjects", "subjectCodes": "list:subjectCodes",
        "periods": "list:periods",
    },
    "users": {
        **_COMMON, "enabledUser": "enabledUser", "orgSourcedIds": "refs:orgs", "role": "role", "username": "username",
        "userIds": "userIds", "givenName": "givenName", "familyName": "familyName", "middleName": "middleName",
        "identifier": "identifier", "email": "email", "sms": "sms", "phone": "phone",
        "agentSourcedIds": "refs:agents", "grades": "list:grades", "password": "password",
    },
    "demographics": {**_COMMON, **{c: c for c in spec.DEMOGRAPHICS.columns if c not in _COMMON}},
    "enrollments": {
        **_COMMON, "classSourcedId": "ref:class", "schoolSourcedId": "ref:school", "userSourcedId": "ref:user",
        "role": "role", "primary": "primary", "beginDate": "beginDate", "endDate": "endDate",
    },
}
# v1p2 users: no role/orgs (they are in `roles`), JSON names of the preferred names differ from CSV's.
USERS_V1P2_FIELDS: dict[str, str] = {
    **{c: FIELDS["users"][c] for c in versions.USERS_V1_2_1.columns if c in FIELDS["users"]},
    "userMasterIdentifier": "userMasterIdentifier",
    "preferredGivenName": "preferredFirstName",
    "preferredMiddleName": "preferredMiddleName",
    "preferredFamilyName": "preferredLastName",
    "primaryOrgSourcedId": "ref:primaryOrg",
    "pronouns": "pronouns",
}
# v1p2 roles are embedded in users; `sourcedId` and `userSourcedId` are added from the user (see `_roles`).
ROLE_FIELDS: dict[str, str] = {
    **_COMMON, "userSourcedId": "userSourcedId", "roleType": "roleType", "role": "role", "beginDate": "beginDate",
    "endDate": "endDate", "orgSourcedId": "ref:org", "userProfileSourcedId": "ref:userProfile",
}


def is_rest_delivery(files: Mapping[str, bytes]) -> bool:
    """Whether the files are a REST pull as staged by connectors/rest_delivery.py."""
    return PULL_MANIFEST in files


def cell(record: Mapping[str, Any], accessor: str) -> str:
    """One CSV cell from a JSON record, by an accessor of `FIELDS`."""
    kind, _, name = accessor.rpartition(":")
    if accessor == "userIds":
        ids = record.get("userIds") or []
        return ",".join(f"{{{i.get('type', '')}:{i.get('identifier', '')}}}" for i in ids if isinstance(i, Mapping))
    value = record.get(name)
    if kind == "ref":
        return _text(value.get("sourcedId")) if isinstance(value, Mapping) else _text(value)
    if kind == "refs":
        return ",".join(_text(v.get("sourcedId") if isinstance(v, Mapping) else v) for v in value or [])
    if kind == "list":
        return ",".join(_text(v) for v in value) if isinstance(value, list) else _text(value)
    return _text(value)


def read_rest_delivery(files: Mapping[str, bytes], profile: DistrictProfile = STRICT) -> RosterPackage:
    """Read a staged/archived REST pull; never raises on bad data, it reports it."""
    try:
        pull = json.loads(files[PULL_MANIFEST])
        version, mode = CSV_VERSIONS[pull["version"]], pull["mode"]
        endpoints: dict[str, Any] = pull["endpoints"]
    except (ValueError, KeyError, TypeError):
        message = f"{PULL_MANIFEST} is not a readable pull manifest (version v1p1|v1p2, mode, endpoints)"
        return uninterpretable("", [Diagnostic.create("fatal", "manifest.invalid", message, file=PULL_MANIFEST)])
    diagnostics: list[Diagnostic] = []
    csv_files: dict[str, bytes] = {}
    modes = {entity: "absent" for entity in spec.ENTITIES}
    for entity in spec.ENTITIES:
        if entity not in endpoints:
            continue
        records = _page_records(entity, endpoints[entity].get("files", []), files, diagnostics)
        if records is None:
            continue
        modes[entity] = mode
        rows = [_lifecycle(record, mode) for record in records]
        if entity == "users" and version == "1.2":
            csv_files["users.csv"] = _csv(USERS_V1P2_FIELDS, rows)
            csv_files["roles.csv"] = _csv(ROLE_FIELDS, _roles(records, mode))
        else:
            csv_files[f"{entity}.csv"] = _csv(FIELDS[entity], rows)
    csv_files[spec.MANIFEST_FILE] = _manifest(version, modes, roles=version == "1.2" and "users.csv" in csv_files)
    package = read_package(csv_files, profile)
    package.diagnostics[:0] = diagnostics
    return package


def _page_records(
    entity: str, names: list[str], files: Mapping[str, bytes], diagnostics: list[Diagnostic]
) -> list[dict[str, Any]] | None:
    """Every record of the entity's pages, in pull order; None when a page is unreadable (fatal reported)."""
    records: list[dict[str, Any]] = []
    for name in names:
        try:
            page = json.loads(files[name])[entity]
        except (KeyError, ValueError, TypeError):
            page = None
        if not isinstance(page, list) or not all(isinstance(record, dict) for record in page):
            message = f"the page is missing or holds no '{entity}' list of records; {entity} cannot be read"
            diagnostics.append(Diagnostic.create("fatal", "file.malformed", message, file=name))
            return None
        records += page
    return records


def _lifecycle(record: dict[str, Any], mode: str) -> dict[str, Any]:
    """Bulk rows leave status and dateLastModified blank (as in CSV) unless the record is tobedeleted."""
    if mode == "delta" or record.get("status") == "tobedeleted":
        return record
    return {**record, "status": "", "dateLastModified": ""}


def _roles(records: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """roles.csv rows from v1p2 users' embedded roles; each gets a sourcedId `<user>.role.<n>` (JSON has none)."""
    rows = []
    for user in records:
        for number, role in enumerate(user.get("roles") or [], start=1):
            if not isinstance(role, Mapping):
                continue
            user_id = _text(user.get("sourcedId"))
            rows.append(_lifecycle({
                **role, "sourcedId": f"{user_id}.role.{number}", "userSourcedId": user_id,
                "status": user.get("status"), "dateLastModified": user.get("dateLastModified"),
            }, mode))
    return rows


def _csv(fields: Mapping[str, str], records: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(fields))
    writer.writerows([cell(record, accessor) for accessor in fields.values()] for record in records)
    return out.getvalue().encode()


def _manifest(version: str, modes: Mapping[str, str], *, roles: bool) -> bytes:
    rows = [("manifest.version", "1.0"), ("oneroster.version", version)]
    rows += [(f"file.{entity}", mode) for entity, mode in modes.items()]
    if version == "1.2":
        rows += [("file.roles", modes["users"] if roles else "absent"), ("file.userProfiles", "absent")]
    return _csv({"propertyName": "propertyName", "value": "value"}, [{"propertyName": k, "value": v} for k, v in rows])


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
