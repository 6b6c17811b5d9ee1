"""The district registry: which districts rostersync serves, where their files are, which LMS tenant.

A YAML file (`districts.yaml` in the home folder; `districts.example.yaml` in the repository shows
the shape). It names credentials only by reference (an environment variable), never the secret, and
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

from rostersync_assets.connectors.sftp import SftpCredentials, SftpEndpoint
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile, ProfileError

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


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

    def endpoint(self) -> SftpEndpoint:
        return SftpEndpoint(
            host=self.host,
            port=self.port,
            username=self.username,
            remote_dir=self.remote_dir,
            host_key=self.host_key,
        )

    def credentials(self, environ: Mapping[str, str] | None = None) -> SftpCredentials:
        """Read the secret from the environment variable the registry names (never from the file)."""
        env = os.environ if environ is None else environ
        values: dict[str, str | None] = {}
        for field_name, var in (("password", self.password_env), ("private_key", self.private_key_env)):
            if var is None:
                values[field_name] = None
            elif var not in env:
                raise RegistryError(f"environment variable {var} (SFTP {field_name} for {self.username}@{self.host}) is not set")
            else:
                values[field_name] = env[var]
        return SftpCredentials(password=values["password"], private_key=values["private_key"])


@dataclass(frozen=True)
class District:
    """One district: its slug (the partition key), its SFTP source and its LMS tenant."""

    slug: str
    name: str
    lms_tenant: str
    sftp: SftpSource
    profile: DistrictProfile = STRICT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sftp"] = {k: v for k, v in data["sftp"].items() if v is not None}
        profile = {k: v for k, v in asdict(self.profile).items() if v != getattr(STRICT, k)}
        if profile:
            data["profile"] = profile
        else:
            data.pop("profile")
        return data


def _parse_district(raw: Any, index: int) -> District:
    if not isinstance(raw, Mapping):
        raise RegistryError(f"districts[{index}] must be a mapping")
    slug = validate_slug(raw.get("slug", ""))
    sftp = raw.get("sftp")
    if not isinstance(sftp, Mapping):
        raise RegistryError(f"district {slug}: 'sftp' must be a mapping")
    missing = [k for k in ("host", "username", "remote_dir", "host_key") if not sftp.get(k)]
    if missing:
        raise RegistryError(f"district {slug}: sftp is missing {', '.join(missing)}")
    if not (sftp.get("password_env") or sftp.get("private_key_env")):
        raise RegistryError(f"district {slug}: sftp needs password_env or private_key_env (an environment variable name)")
    for secret_field in ("password", "private_key"):
        if secret_field in sftp:
            raise RegistryError(
                f"district {slug}: sftp.{secret_field} holds a secret in the registry; "
                f"name an environment variable with sftp.{secret_field}_env instead"
            )
    try:
        profile = DistrictProfile.from_mapping(raw.get("profile"))
    except ProfileError as error:
        raise RegistryError(f"district {slug}: profile: {error}") from None
    return District(
        slug=slug,
        profile=profile,
        name=str(raw.get("name") or slug),
        lms_tenant=str(raw.get("lms_tenant") or slug),
        sftp=SftpSource(
            host=str(sftp["host"]),
            port=int(sftp.get("port", 22)),
            username=str(sftp["username"]),
            remote_dir=str(sftp["remote_dir"]),
            host_key=str(sftp["host_key"]).strip(),
            password_env=sftp.get("password_env"),
            private_key_env=sftp.get("private_key_env"),
        ),
    )


@dataclass(frozen=True)
class DistrictRegistry:
    """The districts of one installation, keyed by slug."""

    districts: dict[str, District]

    @classmethod
    def load(cls, path: Path) -> DistrictRegistry:
        """Read the registry; a missing file is an empty registry (a fresh installation)."""
        if not path.exists():
            return cls({})
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
