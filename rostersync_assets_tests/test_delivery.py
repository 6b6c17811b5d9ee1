"""A delivery on the SFTP server: completeness, identity, and staging it over a real SFTP session."""

import hashlib
import os

from rostersync_assets.connectors.delivery import (
    WatchState,
    delivery_id_for,
    listing_fingerprint,
    split_listing,
    stage_delivery,
    watch_step,
)
from rostersync_assets.connectors.sftp import RemoteFile, SftpConnector

MANIFEST = RemoteFile("manifest.csv", 120, 1000)
USERS = RemoteFile("users.csv", 5000, 1000)


def test_ready_only_after_two_identical_listings_with_a_manifest():
    state, ready = watch_step(WatchState(), [USERS, MANIFEST])
    assert ready is None  # first look: cannot know whether users.csv is still growing
    state, ready = watch_step(state, [USERS, MANIFEST])
    assert ready == listing_fingerprint([MANIFEST, USERS])
    state, again = watch_step(state, [USERS, MANIFEST])
    assert again is None  # never requested twice


def test_a_growing_file_or_missing_manifest_is_not_ready():
    state, _ = watch_step(WatchState(), [RemoteFile("users.csv", 10, 1000), MANIFEST])
    state, ready = watch_step(state, [RemoteFile("users.csv", 20, 1001), MANIFEST])
    assert ready is None
    state, _ = watch_step(WatchState(), [USERS])
    _, ready = watch_step(state, [USERS])
    assert ready is None


def test_a_new_delivery_after_a_synced_one_is_ready_again():
    state, _ = watch_step(WatchState(), [USERS, MANIFEST])
    state, first = watch_step(state, [USERS, MANIFEST])
    newer = [RemoteFile("users.csv", 5100, 2000), RemoteFile("manifest.csv", 120, 2000)]
    state, _ = watch_step(state, newer)
    _, second = watch_step(state, newer)
    assert first and second and first != second


def test_a_complete_clever_set_marks_a_delivery_without_manifest():
    clever = [RemoteFile(name, 10, 1000) for name in ("schools.csv", "Students.csv", "teachers.csv", "sections.csv")]
    state, _ = watch_step(WatchState(), clever)
    _, ready = watch_step(state, clever)
    assert ready is None  # enrollments.csv still missing
    complete = [*clever, RemoteFile("enrollments.csv", 10, 1000)]
    state, _ = watch_step(WatchState(), complete)
    _, ready = watch_step(state, complete)
    assert ready is not None


def test_hidden_and_unsafe_names_are_left_out_of_a_delivery():
    kept, left_out = split_listing([USERS, RemoteFile(".DS_Store", 1, 1), RemoteFile("users.csv.part", 1, 1)])
    assert [f.name for f in kept] == ["users.csv", "users.csv.part"]
    assert left_out == [".DS_Store"]


def test_delivery_id_is_content_addressed():
    from datetime import UTC, datetime

    at = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)
    first = delivery_id_for(at, {"users.csv": "aa", "manifest.csv": "bb"})
    assert first.startswith("20260901T020000Z-")
    assert first == delivery_id_for(at, {"manifest.csv": "bb", "users.csv": "aa"})
    assert first != delivery_id_for(at, {"users.csv": "ab", "manifest.csv": "bb"})


def test_stage_delivery_downloads_every_file_with_checksums(sftp_server, tmp_path):
    (sftp_server.drop_dir / "users.csv").write_bytes(b"sourcedId\n0001\n")
    (sftp_server.drop_dir / "manifest.csv").write_bytes(b"propertyName,value\n")
    (sftp_server.drop_dir / ".DS_Store").write_bytes(b"x")
    for name in ("users.csv", "manifest.csv"):
        os.utime(sftp_server.drop_dir / name, (1_788_000_000, 1_788_000_000))
    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials) as connector:
        staged = stage_delivery(connector, district="lincoln-usd", source="sftp://test", staging_root=tmp_path / "staging")
    assert [f.name for f in staged.files] == ["manifest.csv", "users.csv"]
    assert staged.left_out == (".DS_Store",)
    users = next(f for f in staged.files if f.name == "users.csv")
    assert users.sha256 == hashlib.sha256(b"sourcedId\n0001\n").hexdigest()
    assert users.path.read_bytes() == b"sourcedId\n0001\n"
    assert users.path.parent == tmp_path / "staging" / "lincoln-usd" / staged.delivery_id
    assert int(staged.delivered_at.timestamp()) == 1_788_000_000


def test_stage_delivery_refuses_a_folder_without_manifest(sftp_server, tmp_path):
    (sftp_server.drop_dir / "users.csv").write_bytes(b"sourcedId\n")
    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials) as connector:
        try:
            stage_delivery(connector, district="lincoln-usd", source="sftp://test", staging_root=tmp_path)
        except ValueError as error:
            assert "lincoln-usd" in str(error) and "manifest.csv" in str(error)
        else:
            raise AssertionError("a delivery without manifest.csv was staged")
