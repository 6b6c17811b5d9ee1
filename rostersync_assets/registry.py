"""The district registry: which districts rostersync serves, where their files are, which LMS tenant.

A YAML file (`districts.yaml` in the home folder; `districts.example.yaml` in the repository shows
the shape). It names credentials only by reference (an environment variable, an AWS Secrets Manager
secret or an entry of the encrypted secrets file: see secret_refs.py), never the secret, and
holds each district's reading profile (see oneroster/profile.py).
Each registered slug becomes a partition of the `districts` dynamic partitions definition.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from rostersync_assets.connectors.sftp import SftpCredentials, SftpEndpoint, UnsafeFileName, validate_file_name
from rostersync_assets.delivery_schedule import DeliverySchedule
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile, ProfileError
from rostersync_assets.rest_source import RestSource
from rostersync_assets.secret_refs import SecretRef, SecretUnavailable, resolve
from rostersync_assets.sync.safety import DEFAULT_POLICY, PolicyError, SafetyPolicy

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
# libyaml's safe loader when PyYAML was built with it: the sensor reads the registry every tick, and for
# 500 districts the pure-Python loader alone takes about a second. Same safe tag set either way.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RegistryError(ValueError):
    """The registry file or one of its entries is unusable; the message names the district and field."""


def validate_slug(slug: str) -> str:
    """Return `slug` if it is a valid district slug (it becomes a partition key and a folder name)."""
    if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        raise RegistryError(
            f"district slug {slug!r} is invalid: use 2-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )
    return slug


@dataclass(frozen=True)
class SftpSource:
    """Where a district drops its nightly OneRoster files, and how we prove we talk to that server."""

    host: str
    port: int
    username: str
    remote_dir: str
    host_key: str
    password_env: str | None = None
    private_key_env: str | None = None
    # A file the district writes last to say "complete" (e.g. `_READY`); None: manifest.csv + a stable listing.
    ready_marker: str | None = None
    # Instead of *_env: an AWS Secrets Manager secret or an entry of the home's encrypted secrets file.
    password_secret: SecretRef | None = None
    private_key_secret: SecretRef | None = None

    def endpoint(self) -> SftpEndpoint:
        return SftpEndpoint(
            host=self.host,
            port=self.port,
            username=self.username,
            remote_dir=self.remote_dir,
            host_key=self.host_key,
        )

    def secret_refs(self) -> dict[str, SecretRef]:
        """Where the password and/or private key live (field name -> reference), never the values."""
        refs = {}
        for field_name in ("password", "private_key"):
            var, stored = getattr(self, f"{field_name}_env"), getattr(self, f"{field_name}_secret")
            if var is not None:
                refs[field_name] = SecretRef("env", var)
            elif stored is not None:
                refs[field_name] = stored
        return refs

    def credentials(self, environ: Mapping[str, str] | None = None) -> SftpCredentials:
        """Fetch the secrets the registry references (environment, AWS Secrets Manager or the encrypted
        secrets file) at use time: never stored in the registry, so rotating one needs no registry edit."""
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for field_name, ref in self.secret_refs().items():
            try:
                values[field_name] = resolve(ref, env)
            except SecretUnavailable as error:
                raise RegistryError(f"SFTP {field_name} for {self.username}@{self.host}: {error}") from None
        return SftpCredentials(password=values.get("password"), private_key=values.get("private_key"))

    def to_dict(self) -> dict[str, Any]:
        """The registry form: set fields only, secret references as mappings (no values)."""
        data: dict[str, Any] = {}
        for name, value in vars(self).items():
            if isinstance(value, SecretRef):
                data[name] = value.to_mapping()
            elif value is not None:
                data[name] = value
        return data


@dataclass(frozen=True)
class District:
    """One district: its slug (the partition key), its source (SFTP or OneRoster REST), its LMS tenant, how its feed is read
    (`profile`) and the safety limits and mode of its LMS sync (`sync`)."""

    slug: str
    name: str
    lms_tenant: str
    # Exactly one source: SFTP deliveries, or a OneRoster REST provider (`rest`; sftp is then None).
    sftp: SftpSource | None
    profile: DistrictProfile = STRICT
    sync: SafetyPolicy = DEFAULT_POLICY
    # When to look for a delivery besides the sensor (cron in the district's zone); None: sensor only.
    schedule: DeliverySchedule | None = None
    rest: RestSource | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.sftp is None:
            data.pop("sftp")
        else:
            data["sftp"] = self.sftp.to_dict()
        if self.rest is None:
            data.pop("rest")
        else:
            data["rest"] = self.rest.to_dict()
        profile = {k: v for k, v in asdict(self.profile).items() if v != getattr(STRICT, k)}
        if profile:
            data["profile"] = profile
        else:
            data.pop("profile")
        if self.sync.changed_fields():
            data["sync"] = self.sync.changed_fields()
        else:
            data.pop("sync")
        if self.schedule is None:
            data.pop("schedule")
        return data


def _parse_district(raw: Any, index: int) -> District:
    if not isinstance(raw, Mapping):
        raise RegistryError(f"districts[{index}] must be a mapping")
    slug = validate_slug(raw.get("slug", ""))
    if ("sftp" in raw) == ("rest" in raw):
        raise RegistryError(f"district {slug}: give exactly one source, 'sftp' or 'rest'")
    rest = None
    if "rest" in raw:
        try:
            rest = RestSource.from_mapping(raw["rest"])
        except ValueError as error:
            raise RegistryError(f"district {slug}: rest: {error}") from None
    sftp = None if rest is not None else _parse_sftp(slug, raw["sftp"])
    try:
        profile = DistrictProfile.from_mapping(raw.get("profile"))
    except ProfileError as error:
        raise RegistryError(f"district {slug}: profile: {error}") from None
    try:
        policy = SafetyPolicy.from_mapping(raw.get("sync"))
    except PolicyError as error:
        raise RegistryError(f"district {slug}: sync: {error}") from None
    try:
        schedule = None if raw.get("schedule") is None else DeliverySchedule.from_mapping(raw["schedule"])
    except ValueError as error:
        raise RegistryError(f"district {slug}: schedule: {error}") from None
    return District(
        schedule=schedule,
        slug=slug,
        profile=profile,
        sync=policy,
        name=str(raw.get("name") or slug),
        lms_tenant=str(raw.get("lms_tenant") or slug),
        sftp=sftp,
        rest=rest,
    )


def _parse_sftp(slug: str, sftp: Any) -> SftpSource:
    """The district's `sftp:` entry: pinned host key, credentials by environment variable only."""
    if not isinstance(sftp, Mapping):
        raise RegistryError(f"district {slug}: 'sftp' must be a mapping")
    missing = [k for k in ("host", "username", "remote_dir", "host_key") if not sftp.get(k)]
    if missing:
        raise RegistryError(f"district {slug}: sftp is missing {', '.join(missing)}")
    if not any(sftp.get(f"{kind}_{how}") for kind in ("password", "private_key") for how in ("env", "secret")):
        raise RegistryError(
            f"district {slug}: sftp needs password_env or private_key_env (an environment variable name), "
            "or password_secret / private_key_secret (an AWS Secrets Manager or secrets file reference)"
        )
    stored: dict[str, SecretRef | None] = {}
    for kind in ("password", "private_key"):
        if sftp.get(f"{kind}_env") and sftp.get(f"{kind}_secret"):
            raise RegistryError(f"district {slug}: give sftp.{kind}_env or sftp.{kind}_secret, not both")
        try:
            stored[kind] = None if sftp.get(f"{kind}_secret") is None else SecretRef.from_mapping(sftp[f"{kind}_secret"])
        except ValueError as error:
            raise RegistryError(f"district {slug}: sftp.{kind}_secret: {error}") from None
    for secret_field in ("password", "private_key"):
        if secret_field in sftp:
            raise RegistryError(
                f"district {slug}: sftp.{secret_field} holds a secret in the registry; "
                f"name an environment variable with sftp.{secret_field}_env instead"
            )
    ready_marker = sftp.get("ready_marker")
    if ready_marker is not None:
        try:
            validate_file_name(str(ready_marker))
        except UnsafeFileName:
            raise RegistryError(
                f"district {slug}: sftp.ready_marker {ready_marker!r} must be a plain file name in remote_dir "
                "(no '/', '..', leading '.' or control characters)"
            ) from None
    return SftpSource(
        host=str(sftp["host"]),
        port=int(sftp.get("port", 22)),
        username=str(sftp["username"]),
        remote_dir=str(sftp["remote_dir"]),
        host_key=str(sftp["host_key"]).strip(),
        password_env=sftp.get("password_env"),
        private_key_env=sftp.get("private_key_env"),
        ready_marker=None if ready_marker is None else str(ready_marker),
        password_secret=stored["password"],
        private_key_secret=stored["private_key"],
    )


@dataclass(frozen=True)
class DistrictRegistry:
    """The districts of one installation, keyed by slug."""

    districts: dict[str, District]

    def __post_init__(self) -> None:
        """Refuse two districts on one LMS tenant: a run for one would write into the other's data."""
        owner: dict[str, str] = {}
        for slug in sorted(self.districts):
            tenant = self.districts[slug].lms_tenant
            if tenant in owner:
                raise RegistryError(
                    f"districts {owner[tenant]} and {slug} share lms_tenant {tenant!r}: each district needs its "
                    "own tenant, or a run for one would write into the other's records"
                )
            owner[tenant] = slug

    @classmethod
    def load(cls, path: Path) -> DistrictRegistry:
        """Read the registry; a missing file is an empty registry (a fresh installation)."""
        if not path.exists():
            return cls({})
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER) or {}
        entries = raw.get("districts") or []
        if not isinstance(entries, list):
            raise RegistryError(f"{path}: 'districts' must be a list")
        districts: dict[str, District] = {}
        for index, entry in enumerate(entries):
            district = _parse_district(entry, index)
            if district.slug in districts:
                raise RegistryError(f"{path}: district {district.slug} is registered twice")
            districts[district.slug] = district
        return cls(districts)

    def get(self, slug: str) -> District:
        try:
            return self.districts[slug]
        except KeyError:
            raise RegistryError(f"district {slug} is not registered") from None

    def with_district(self, district: District) -> DistrictRegistry:
        """A registry with `district` added or replaced (registries are values; save to persist)."""
        return DistrictRegistry({**self.districts, district.slug: district})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"districts": [d.to_dict() for d in sorted(self.districts.values(), key=lambda d: d.slug)]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
        tmp.replace(path)
