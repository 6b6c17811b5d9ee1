"""Seeded fuzzing of `rostersync validate`: whatever bytes a district sends, it gets a verdict, never a crash.

Each case takes a small valid generated delivery, breaks it the way real exports break (truncated
uploads, wrong encodings, spreadsheet edits of the columns, stray quotes, NUL bytes, CR-only endings,
hand-edited manifests) and runs it through `run_validate`, which exits 1 with "internal error" on
any exception. A case passes when the exit code is 0 or 1, nothing went to stderr and every finding
uses a documented rule. Seeds are fixed and a case is named `<mutation>-<seed>` (or
`combined-<seed>`, `zip-<seed>`): a failure reproduces exactly with `file_case`, `package_case`,
`combined_case` or `zip_case`.
"""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import RULES
from rostersync_assets.sandbox.generator import generate_district, write_delivery
from rostersync_assets.validate_command import run_validate

STUDENTS, SEED = 30, 11
# 18 file mutations x 10 + 6 package mutations x 4 + 2 profiles x 10 combined + 16 zips = 240 cases, ~10 s.
FILE_SEEDS, PACKAGE_SEEDS, COMBINED_CASES, ZIP_CASES = 10, 4, 10, 16
DATA_FILES = tuple(file_spec.file_name for file_spec in spec.SYNCED_FILES)

Files = dict[str, bytes]
Rows = list[list[str]]


# --- how files break ------------------------------------------------------------------------------


def _rows(raw: bytes) -> Rows:
    return list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))


def _csv(rows: Rows) -> bytes:
    stream = io.StringIO(newline="")
    csv.writer(stream, lineterminator="\n").writerows(rows)
    return stream.getvalue().encode("utf-8")


def _with_text_in_a_cell(rng: random.Random, raw: bytes, text: str) -> str:
    """The file's text with `text` appended to one random data cell (to test encodings on real rows)."""
    rows = _rows(raw)
    row = rows[rng.randrange(1, len(rows))] if len(rows) > 1 else rows[0]
    row[rng.randrange(len(row))] += text
    return _csv(rows).decode("utf-8")


def _at_random_offsets(rng: random.Random, raw: bytes, insert: Callable[[], bytes], count: int) -> bytes:
    data = bytearray(raw)
    for _ in range(count):
        position = rng.randrange(len(data) + 1)
        data[position:position] = insert()
    return bytes(data)


def _columns_permuted(rng: random.Random, raw: bytes) -> bytes:
    rows = _rows(raw)
    order = list(range(len(rows[0])))
    rng.shuffle(order)
    return _csv([[row[i] if i < len(row) else "" for i in order] for row in rows])


def _column_duplicated(rng: random.Random, raw: bytes) -> bytes:
    rows = _rows(raw)
    column = rng.randrange(len(rows[0]))
    return _csv([row + [row[column]] if column < len(row) else row for row in rows])


def _column_dropped(rng: random.Random, raw: bytes) -> bytes:
    rows = _rows(raw)
    column = rng.randrange(len(rows[0]))
    return _csv([row[:column] + row[column + 1 :] for row in rows])


def _rows_duplicated(rng: random.Random, raw: bytes) -> bytes:
    rows = _rows(raw)
    copies = [rows[rng.randrange(len(rows))] for _ in range(rng.randint(1, 5))]
    return _csv(rows + copies)


def _huge_field(rng: random.Random, raw: bytes) -> bytes:
    rows = _rows(raw)
    row = rows[rng.randrange(len(rows))]
    row[rng.randrange(len(row))] = rng.choice("xA7,\" ") * 1_000_000
    return _csv(rows)


# Mutations that need a well-formed UTF-8 CSV (applied first in combined cases).
STRUCTURAL: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "columns_permuted": _columns_permuted,
    "column_duplicated": _column_duplicated,
    "column_dropped": _column_dropped,
    "rows_duplicated": _rows_duplicated,
    "huge_field": _huge_field,
    "latin1": lambda rng, raw: _with_text_in_a_cell(rng, raw, "Zoë Núñez").encode("latin-1", "replace"),
    "shift_jis": lambda rng, raw: _with_text_in_a_cell(rng, raw, "山田太郎").encode("shift_jis", "replace"),
}

# Mutations of any bytes.
BYTES: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "truncated": lambda rng, raw: raw[: rng.randrange(len(raw) + 1)],
    "garbage": lambda rng, raw: rng.randbytes(rng.randint(1, 4096)),
    "empty": lambda rng, raw: b"",
    "header_only": lambda rng, raw: raw.split(b"\n", 1)[0] + rng.choice([b"", b"\n", b"\r\n"]),
    "utf16_bom": lambda rng, raw: raw.decode("utf-8", "replace").encode("utf-16"),
    "quotes": lambda rng, raw: _at_random_offsets(rng, raw, lambda: b'"', rng.randint(1, 6)),
    "nul_bytes": lambda rng, raw: _at_random_offsets(rng, raw, lambda: b"\x00", rng.randint(1, 6)),
    "cr_only": lambda rng, raw: raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r"),
    "blank_lines": lambda rng, raw: _at_random_offsets(rng, raw, lambda: b"\n\n", rng.randint(1, 4)),
    "byte_flips": lambda rng, raw: _at_random_offsets(rng, raw, lambda: bytes([rng.randrange(256)]), rng.randint(1, 8)),
    "bom": lambda rng, raw: b"\xef\xbb\xbf" + raw,
}


# --- how packages and manifests break -------------------------------------------------------------


def _manifest_edited(rng: random.Random, files: Files) -> None:
    """One hand edit of manifest.csv: the row-level mistakes people make in a spreadsheet."""
    rows = _rows(files[spec.MANIFEST_FILE])
    index = rng.randrange(1, len(rows))
    edit = rng.choice(["version", "mode", "duplicate", "drop", "unknown", "header", "width", "case", "absent"])
    if edit == "version":
        rows = [["oneroster.version", rng.choice(["1.0", "1.2", "", "1.1 ", "v1.1"])] if r[0] == "oneroster.version" else r for r in rows]
    elif edit == "mode":
        rows[index][1] = rng.choice(["Bulk", "full", "", "delta ", "absent", "delta"])
    elif edit == "duplicate":
        rows.append(list(rows[index]))
    elif edit == "drop":
        del rows[index]
    elif edit == "unknown":
        rows.append([rng.choice(["fiel.users", "file.Users", "file.", "source.extra", ""]), "bulk"])
    elif edit == "header":
        rows[0] = rng.choice([["property", "value"], ["propertyName"], ["value", "propertyName"]])
    elif edit == "width":
        rows[index].append("extra")
    elif edit == "case":
        rows[index][0] = rows[index][0].upper()
    else:
        rows = [[r[0], "absent"] if r[0].startswith("file.") and rng.random() < 0.5 else r for r in rows]
    files[spec.MANIFEST_FILE] = _csv(rows)


def _all_delta(rng: random.Random, files: Files) -> None:
    """Every synced file declared delta: exercises the delta paths (no reference checks, empty files allowed)."""
    files[spec.MANIFEST_FILE] = files[spec.MANIFEST_FILE].replace(b",bulk", b",delta")


def _file_removed(rng: random.Random, files: Files) -> None:
    del files[rng.choice(sorted(files))]


def _file_renamed(rng: random.Random, files: Files) -> None:
    name = rng.choice(sorted(files))
    new_name = rng.choice([name.upper(), name.capitalize(), name + ".bak", name.replace(".csv", ".CSV"), " " + name])
    files[new_name] = files.pop(name)


def _unknown_file(rng: random.Random, files: Files) -> None:
    files[rng.choice(["readme.txt", "Users.csv", "lineItems.csv", "results.csv", ".DS_Store"])] = rng.randbytes(64)


def _clever_lookalike(rng: random.Random, files: Files) -> None:
    """No manifest and some of Clever's file names: sends the delivery down the Clever converter."""
    files.pop(spec.MANIFEST_FILE, None)
    clever_names = ["schools.csv", "students.csv", "teachers.csv", "sections.csv", "enrollments.csv"]
    for name in rng.sample(clever_names, rng.randint(1, len(clever_names))):
        files[name] = files.get(rng.choice(DATA_FILES), b"")


PACKAGE: dict[str, Callable[[random.Random, Files], None]] = {
    "clever_lookalike": _clever_lookalike,
    "manifest_edited": _manifest_edited,
    "all_delta": _all_delta,
    "file_removed": _file_removed,
    "file_renamed": _file_renamed,
    "unknown_file": _unknown_file,
}
FILE_MUTATIONS = sorted([*STRUCTURAL, *BYTES])
MUTATIONS = sorted([*FILE_MUTATIONS, *PACKAGE])
# Combined cases apply manifest edits first (later mutations may delete the manifest), then
# structural ones (they need well-formed CSV), then byte-level ones, then file-level package edits.
_COMBINED_ORDER = {"manifest_edited": 0, "all_delta": 0, **dict.fromkeys(STRUCTURAL, 1), **dict.fromkeys(BYTES, 2)}


def _mutate(name: str, rng: random.Random, files: Files, targets: list[str]) -> None:
    """Apply mutation `name` to `files` (file mutations hit one of `targets` still in the package)."""
    if name in PACKAGE:
        PACKAGE[name](rng, files)
        return
    present = [target for target in targets if target in files]
    if present:
        target = rng.choice(present)
        files[target] = {**STRUCTURAL, **BYTES}[name](rng, files[target])


def _sub_delivery(delivery: Files, file_name: str) -> Files:
    """The manifest and one data file, the other files declared absent: a valid delivery in itself.

    pandera costs ~18 ms per table however small, so a full 7-file package costs ~125 ms a case;
    mutating one file inside a one-file package keeps a few hundred cases within seconds.
    """
    entity = f"file.{spec.entity_of_file(file_name)}"
    manifest = [[name, "absent" if name.startswith("file.") and name != entity else value]
                for name, value in _rows(delivery[spec.MANIFEST_FILE])]
    return {spec.MANIFEST_FILE: _csv(manifest), file_name: delivery[file_name]}


# --- the cases ------------------------------------------------------------------------------------


# Every lenient profile field set, so the normalisation paths are fuzzed as well as the strict ones.
LENIENT_PROFILE = {
    "header_aliases": {"users.csv": {"userId": "userIds", "SourcedId": "sourcedId"}},
    "date_format": "%m/%d/%Y",
    "boolean_aliases": {"Y": "true", "N": "false", "1": "true", "0": "false"},
    "enum_aliases": {"role": {"Student": "student"}},
    "grade_map": {"K": "KG", "9": "09"},
    "legacy_v1_0": True,
    "fallback_encoding": "latin-1",
}


@pytest.fixture(scope="module")
def lenient_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "profile.yaml"
    path.write_text(yaml.safe_dump(LENIENT_PROFILE), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("valid-delivery")
    write_delivery(generate_district(students=STUDENTS, seed=SEED), folder)
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def file_case(delivery: Files, mutation: str, seed: int) -> Files:
    """Case `<mutation>-<seed>`: one file mutation of the manifest or the data file of a one-file delivery."""
    rng = random.Random(f"{mutation}-{seed}")
    files = _sub_delivery(delivery, rng.choice(DATA_FILES))
    _mutate(mutation, rng, files, sorted(files))
    return files


def package_case(delivery: Files, mutation: str, seed: int) -> Files:
    """Case `<mutation>-<seed>`: one package-level mutation of the whole delivery."""
    files = dict(delivery)
    _mutate(mutation, random.Random(f"{mutation}-{seed}"), files, [])
    return files


def combined_case(delivery: Files, seed: int) -> Files:
    """Case `combined-<seed>`: 2-4 mutations of the whole delivery, so references between files are exercised."""
    rng = random.Random(f"combined-{seed}")
    files = dict(delivery)
    for name in sorted(rng.sample(MUTATIONS, rng.randint(2, 4)), key=lambda n: _COMBINED_ORDER.get(n, 3)):
        _mutate(name, rng, files, list(DATA_FILES))
    return files


def zip_case(delivery: Files, seed: int) -> bytes:
    """Case `zip-<seed>`: the delivery zipped (sometimes a file mutated first), then the archive's bytes broken."""
    rng = random.Random(f"zip-{seed}")
    files = dict(delivery)
    if rng.random() < 0.5:
        _mutate(rng.choice(FILE_MUTATIONS), rng, files, list(DATA_FILES))
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as archive:
        for name, raw in files.items():
            archive.writestr(rng.choice(["", "", "export/"]) + name, raw)
    return BYTES[rng.choice(["truncated", "byte_flips", "garbage", "bom"])](rng, stream.getvalue())


def assert_verdict(path: Path, case: str, *, as_json: bool, profile: Path | None = None) -> None:
    """The case ends in a verdict: exit 0/1, nothing on stderr, documented rules, well-formed output."""
    out, err = io.StringIO(), io.StringIO()
    code = run_validate(path, as_json=as_json, profile_path=profile, out=out, err=err)
    assert (code, err.getvalue()) in {(0, ""), (1, "")}, f"case {case}: exit {code}, stderr {err.getvalue()!r}"
    if as_json:
        summary = json.loads(out.getvalue())
        assert set(summary) == {"version", "accepted", "files", "diagnostics"}, case
        assert summary["accepted"] is (code == 0), case
        assert {d["rule"] for d in summary["diagnostics"]} <= set(RULES), case
    else:
        verdict = out.getvalue().rstrip("\n").rsplit("\n", 1)[-1]
        assert verdict.startswith("accepted:" if code == 0 else "rejected:"), f"case {case}: {verdict!r}"


@pytest.mark.parametrize("mutation", FILE_MUTATIONS)
def test_every_file_mutation_gets_a_verdict(delivery: Files, mutation: str, tmp_path: Path) -> None:
    for seed in range(FILE_SEEDS):
        case = f"{mutation}-{seed}"
        assert_verdict(_write(file_case(delivery, mutation, seed), tmp_path / case), case, as_json=seed % 2 == 0)


@pytest.mark.parametrize("mutation", sorted(PACKAGE))
def test_every_package_mutation_gets_a_verdict(delivery: Files, mutation: str, tmp_path: Path) -> None:
    for seed in range(PACKAGE_SEEDS):
        case = f"{mutation}-{seed}"
        assert_verdict(_write(package_case(delivery, mutation, seed), tmp_path / case), case, as_json=seed % 2 == 0)


@pytest.mark.parametrize("lenient", [False, True], ids=["strict", "lenient"])
def test_combined_mutations_get_a_verdict(delivery: Files, lenient_profile: Path, lenient: bool, tmp_path: Path) -> None:
    for seed in range(COMBINED_CASES):
        case = f"combined-{seed}"
        profile = lenient_profile if lenient else None
        assert_verdict(_write(combined_case(delivery, seed), tmp_path / case), case, as_json=seed % 2 == 1, profile=profile)


def test_damaged_zips_get_a_verdict(delivery: Files, tmp_path: Path) -> None:
    for seed in range(ZIP_CASES):
        case = f"zip-{seed}"
        archive = tmp_path / f"{case}.zip"
        archive.write_bytes(zip_case(delivery, seed))
        assert_verdict(archive, case, as_json=seed % 2 == 0)


def test_the_unmutated_delivery_is_accepted(delivery: Files, tmp_path: Path) -> None:
    """Guards the fuzzer itself: if the base delivery were rejected, every case would test the same path."""
    out = io.StringIO()
    assert run_validate(_write(delivery, tmp_path), as_json=False, profile_path=None, out=out, err=io.StringIO()) == 0


def _write(files: Files, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder
