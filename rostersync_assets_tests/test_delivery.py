"""A delivery on the SFTP server: completeness (stable listing, marker file, zip), identity, and staging it
over a real SFTP session, through to the pipeline for a zip."""

import hashlib
import io
import os
import zipfile

import pytest

from rostersync_assets.connectors.delivery import (
    DeliveryNotReady,
    WatchState,
    delivery_files,
    delivery_id_for,
    is_complete,
    listing_fingerprint,
    split_listing,
    stage_delivery,
    watch_step,
)
from rostersync_assets.connectors.sftp import RemoteFile, RetryPolicy, SftpConnector
from rostersync_assets.sandbox.generator import generate_district
from rostersync_assets_tests.fixtures.pipeline import SLUG, TENANT

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


def test_a_rewrite_of_the_same_size_is_not_settled_either():
    state, _ = watch_step(WatchState(), [RemoteFile("users.csv", 5000, 1000), MANIFEST])
    _, ready = watch_step(state, [RemoteFile("users.csv", 5000, 1007), MANIFEST])  # same size, new mtime
    assert ready is None


def test_a_district_marker_makes_a_delivery_ready_at_once_and_is_not_part_of_it():
    marker = RemoteFile("_READY", 0, 1000)
    assert watch_step(WatchState(), [USERS, MANIFEST])[1] is None  # without a marker: wait for a second look
    state, ready = watch_step(WatchState(), [USERS, MANIFEST, marker], ready_marker="_READY")
    assert ready is not None
    assert watch_step(state, [USERS, MANIFEST, marker], ready_marker="_READY")[1] is None  # requested once
    assert [f.name for f in delivery_files([USERS, marker], "_READY")[0]] == ["users.csv"]


def test_a_marker_older_than_a_file_or_missing_does_not_vouch_for_the_delivery():
    stale = RemoteFile("_READY", 0, 900)  # last night's marker; users.csv is being rewritten since
    state, _ = watch_step(WatchState(), [USERS, MANIFEST, stale], ready_marker="_READY")
    _, ready = watch_step(state, [USERS, MANIFEST, stale], ready_marker="_READY")
    assert ready is None  # not even a stable listing with manifest.csv: the district said it writes a marker
    assert not is_complete([USERS, MANIFEST], "_READY")


def test_a_single_zip_is_a_complete_delivery_and_two_are_not():
    roster_zip = RemoteFile("roster.zip", 9000, 1000)
    state, _ = watch_step(WatchState(), [roster_zip, RemoteFile(".DS_Store", 1, 1)])
    assert watch_step(state, [roster_zip, RemoteFile(".DS_Store", 1, 1)])[1] is not None
    assert not is_complete([roster_zip, RemoteFile("old.zip", 10, 900)])


@pytest.mark.parametrize("server_fixture", ["sftp_server", "openssh_server"])
def test_a_file_still_being_written_during_a_listing_holds_the_delivery(request, server_fixture):
    server = request.getfixturevalue(server_fixture)
    users = server.drop_dir / "users.csv"
    users.write_bytes(b"sourcedId\n0001\n")
    (server.drop_dir / "manifest.csv").write_bytes(b"propertyName,value\n")
    with SftpConnector(server.endpoint(), server.credentials) as connector:
        state, ready = watch_step(WatchState(), connector.list_files())
        with users.open("ab") as upload:  # the district's upload is still running
            upload.write(b"0002\n")
        state, ready = watch_step(state, connector.list_files())
        assert ready is None
        state, ready = watch_step(state, connector.list_files())  # the upload has finished
        assert ready is not None


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            archive.writestr(name, body)
    return buffer.getvalue()


def test_stage_delivery_takes_a_zip_whole_and_refuses_a_half_uploaded_one(sftp_server, tmp_path):
    body = _zip_bytes({"manifest.csv": b"propertyName,value\n", "users.csv": b"sourcedId\n0001\n"})
    (sftp_server.drop_dir / "roster.zip").write_bytes(body)
    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials) as connector:
        staged = stage_delivery(connector, district="lincoln-usd", source="sftp://test", staging_root=tmp_path / "s")
        assert [(f.name, f.sha256) for f in staged.files] == [("roster.zip", hashlib.sha256(body).hexdigest())]
        (sftp_server.drop_dir / "roster.zip").write_bytes(body[: len(body) // 2])  # upload cut short
        with pytest.raises(DeliveryNotReady, match="lincoln-usd: roster.zip .* not a complete zip"):
            stage_delivery(connector, district="lincoln-usd", source="sftp://test", staging_root=tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s" / "lincoln-usd").iterdir()) == [staged.delivery_id]


def test_stage_delivery_refuses_a_folder_that_changes_while_it_downloads(sftp_server, tmp_path):
    manifest = sftp_server.drop_dir / "manifest.csv"
    manifest.write_bytes(b"propertyName,value\n")
    (sftp_server.drop_dir / "users.csv").write_bytes(os.urandom(300_000))
    sftp_server.faults.drop_after["users.csv"] = 100_000
    # While users.csv downloads, the district rewrites manifest.csv (already downloaded: it sorts first).
    sftp_server.faults.on_fire = lambda name: manifest.write_bytes(b"propertyName,value\nmanifest.version,1.0\n")
    retry = RetryPolicy(attempts=3, backoff_s=0.05)
    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials, retry=retry) as connector:
        with pytest.raises(DeliveryNotReady, match=r"lincoln-usd: files changed .* \(manifest.csv\)"):
            stage_delivery(connector, district="lincoln-usd", source="sftp://test", staging_root=tmp_path)
    assert list((tmp_path / "lincoln-usd").iterdir()) == []  # nothing staged, no work folder left


def test_stage_delivery_with_a_marker_leaves_the_marker_out(sftp_server, tmp_path):
    (sftp_server.drop_dir / "users.csv").write_bytes(b"sourcedId\n")
    (sftp_server.drop_dir / "manifest.csv").write_bytes(b"propertyName,value\n")
    with SftpConnector(sftp_server.endpoint(), sftp_server.credentials) as connector:
        with pytest.raises(DeliveryNotReady, match="marker file _READY"):
            stage_delivery(connector, district="lincoln-usd", source="s", staging_root=tmp_path, ready_marker="_READY")
        (sftp_server.drop_dir / "_READY").write_bytes(b"")
        staged = stage_delivery(connector, district="lincoln-usd", source="s", staging_root=tmp_path, ready_marker="_READY")
    assert [f.name for f in staged.files] == ["manifest.csv", "users.csv"] and staged.left_out == ()


def test_a_zip_delivery_goes_through_the_pipeline(district_pipeline):
    roster = generate_district(students=60, seed=23, district=SLUG)
    paths = district_pipeline.publish(roster)
    body = _zip_bytes({path.name: path.read_bytes() for path in paths})
    for path in paths:
        path.unlink()
    (district_pipeline.sftp.drop_dir / "roster-20260901.zip").write_bytes(body)

    result = district_pipeline.run()

    assert result.success
    raw = next(e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "raw_roster_delivery")
    assert raw.materialization.metadata["file_count"].value == 1
    for entity in ("users", "classes", "enrollments"):
        live = set(district_pipeline.lms.store.active_records(TENANT, entity))
        assert live == set(roster.tables[entity]["sourcedId"]), entity
