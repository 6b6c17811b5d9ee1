"""`rostersync validate`: verdicts, exit codes, the district-facing report and the stored diagnostics.

A few cases run the real CLI in a subprocess (the contract a district's script relies on: exit code,
one JSON document, messages on stderr); the rest call `run_validate` in-process for speed.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rostersync_assets.oneroster.diagnostics import RULES, Diagnostic
from rostersync_assets.oneroster.profile import DistrictProfile
from rostersync_assets.oneroster.reader import read_package_dir
from rostersync_assets.oneroster.report import CSV_COLUMNS, format_human, summarize, write_diagnostics
from rostersync_assets.oneroster.validate import validate_package
from rostersync_assets.sandbox.generator import generate_district, write_delivery
from rostersync_assets import validate_command
from rostersync_assets.validate_command import run_validate

CLI = [sys.executable, "-m", "rostersync_assets.cli", "validate"]
STUDENTS, SEED = 30, 5


@pytest.fixture(scope="module")
def valid_delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("valid")
    write_delivery(generate_district(students=STUDENTS, seed=SEED), folder)
    return folder


@pytest.fixture()
def delivery(valid_delivery: Path, tmp_path: Path) -> Path:
    """A private copy of the valid delivery that a test may break."""
    folder = tmp_path / "delivery"
    folder.mkdir()
    for item in valid_delivery.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    return folder


def edit_cells(folder: Path, file_name: str, edits: dict[tuple[int, str], str]) -> list[list[str]]:
    """Set cells given as (data row index, column) -> value; returns the original rows."""
    with (folder / file_name).open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    original = [list(row) for row in rows]
    for (index, column), value in edits.items():
        rows[index + 1][rows[0].index(column)] = value
    with (folder / file_name).open("w", encoding="utf-8", newline="") as stream:
        csv.writer(stream, lineterminator="\n").writerows(rows)
    return original


def validate(folder: Path, *, as_json: bool = False, profile: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_validate(folder, as_json=as_json, profile_path=profile, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


# --- the real CLI ---------------------------------------------------------------------------------


def test_cli_accepts_a_generated_delivery(valid_delivery: Path) -> None:
    done = cli(str(valid_delivery))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.rstrip().splitlines()[-1] == "accepted: no findings"


def test_cli_rejects_a_delivery_with_a_fatal_finding_and_says_where(delivery: Path) -> None:
    (delivery / "users.csv").write_bytes(b"")
    done = cli(str(delivery))
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.rstrip().splitlines()[-1].startswith("rejected: 1 fatal finding in users.csv")


def lenient_profile(folder: Path) -> Path:
    """A profile that quarantines up to half of a file's rows instead of holding the delivery."""
    path = folder / "lenient.yaml"
    path.write_text("max_rejected_share: 0.5\n", encoding="utf-8")
    return path


def test_cli_json_is_one_summary_document(delivery: Path, tmp_path: Path) -> None:
    edit_cells(delivery, "users.csv", {(0, "role"): "Lehrer"})
    done = cli(str(delivery), "--json", "--profile", str(lenient_profile(tmp_path)))
    summary = json.loads(done.stdout)
    assert done.returncode == 0 and set(summary) == {"version", "accepted", "files", "diagnostics"}
    assert summary["version"] == "1.1" and summary["accepted"] is True
    assert summary["files"]["users.csv"] == {"mode": "bulk", "rows": STUDENTS + 2, "rejected": 1}
    assert {d["rule"] for d in summary["diagnostics"]} >= {"value.enum", "reference.rejected"}


def test_cli_usage_errors_exit_2_without_a_traceback(valid_delivery: Path, tmp_path: Path) -> None:
    bad_profile = tmp_path / "profile.yaml"
    bad_profile.write_text("boolean_aliases: {Y: yes-please}\n", encoding="utf-8")
    for args, message in [
        ((str(valid_delivery), "--profile", str(bad_profile)), "is invalid: boolean_aliases must map to"),
        ((str(tmp_path / "nowhere"),), "does not exist"),
    ]:
        done = cli(*args)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.startswith("rostersync validate: ") and message in done.stderr
        assert "Traceback" not in done.stderr


# --- exit codes and usage errors ------------------------------------------------------------------


def test_rejected_rows_within_the_profile_share_keep_the_delivery_accepted_and_are_counted(
    delivery: Path, tmp_path: Path
) -> None:
    edit_cells(delivery, "users.csv", {(3, "enabledUser"): "yes"})  # and its demographics and enrollments with it
    code, out, _ = validate(delivery, profile=lenient_profile(tmp_path))
    assert code == 0
    assert out.rstrip().splitlines()[-1] == "accepted: 8 errors; 8 row(s) rejected"


def test_more_rejected_rows_than_the_share_hold_the_delivery_and_say_which(delivery: Path) -> None:
    edit_cells(delivery, "users.csv", {(3, "enabledUser"): "yes"})
    code, out, _ = validate(delivery)  # strict default: at most 2 % of a file's rows
    verdict = out.rstrip().splitlines()[-1]
    assert code == 1
    assert verdict.startswith("rejected: 1 of ") and "users rows rejected" in verdict and "> 2%" in verdict


def test_warnings_and_fixes_are_accepted(delivery: Path) -> None:
    (delivery / "readme.txt").write_text("exported by SIS", encoding="utf-8")
    (delivery / "orgs.csv").write_bytes(b"\xef\xbb\xbf" + (delivery / "orgs.csv").read_bytes())
    code, out, err = validate(delivery)
    assert (code, err) == (0, "")
    assert out.rstrip().splitlines()[-1] == "accepted: 1 warning, 1 fix"


@pytest.mark.parametrize("profile_text, message", [
    ("unknown_field: 1\n", "unknown profile field(s): unknown_field"),
    ("boolean_aliases: [Y\n", "is not valid YAML (line"),
    ("- a list\n", "a profile is a mapping of fields"),
])
def test_an_invalid_profile_is_a_usage_error(valid_delivery: Path, tmp_path: Path, profile_text: str, message: str) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(profile_text, encoding="utf-8")
    code, out, err = validate(valid_delivery, profile=profile)
    assert (code, out) == (2, "") and message in err and err.count("\n") == 1


def test_an_unreadable_profile_is_a_usage_error(valid_delivery: Path, tmp_path: Path) -> None:
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes("date_format: '%d.%m.%Y' # Zoë\n".encode("latin-1"))
    for profile, message in [(tmp_path / "missing.yaml", "cannot read the profile"), (not_utf8, "is not UTF-8")]:
        code, out, err = validate(valid_delivery, profile=profile)
        assert (code, out) == (2, "") and message in err


def test_a_profile_with_non_string_keys_is_a_usage_error(valid_delivery: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("1: x\n", encoding="utf-8")
    assert validate(valid_delivery, profile=profile)[0] == 2


def test_a_plain_file_is_not_a_delivery(valid_delivery: Path) -> None:
    code, out, err = validate(valid_delivery / "users.csv")
    assert (code, out) == (2, "") and "is neither a delivery folder nor a .zip file" in err


def test_a_zipped_delivery_is_read_and_a_damaged_zip_is_rejected(valid_delivery: Path, tmp_path: Path) -> None:
    archive = tmp_path / "Delivery.ZIP"
    with zipfile.ZipFile(archive, "w") as zipped:
        for item in valid_delivery.iterdir():
            zipped.write(item, item.name)
    assert validate(archive)[:1] == (0,)
    archive.write_bytes(archive.read_bytes()[:100])
    code, out, err = validate(archive)
    assert (code, err) == (1, "")
    assert "the delivery as a whole: 1 fatal finding\n  package.zip_invalid: 1 fatal finding\n" in out


def test_a_clever_delivery_is_detected_and_converted(tmp_path: Path) -> None:
    files = {
        "schools.csv": "School_id,School_name\ns1,North High\n",
        "students.csv": "School_id,Student_id,First_name,Last_name,Grade\ns1,st1,Ann,Lee,9\n",
        "teachers.csv": "School_id,Teacher_id,First_name,Last_name\ns1,t1,Bo,Kim\n",
        "sections.csv": "School_id,Section_id,Teacher_id,Course_name,Grade\ns1,sec1,t1,Algebra,9\n",
        "enrollments.csv": "School_id,Section_id,Student_id\ns1,sec1,st1\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    code, out, err = validate(tmp_path, as_json=True)
    summary = json.loads(out)
    assert summary["version"] == "clever" and "clever.converted" in {d["rule"] for d in summary["diagnostics"]}
    assert (code, err) == (0 if summary["accepted"] else 1, "")


def test_a_bug_is_an_internal_error_that_names_the_delivery_but_no_data(
    valid_delivery: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise KeyError("Søndergaard")  # exception messages may quote a cell: it must not be printed

    monkeypatch.setattr(validate_command, "read_files", crash)
    code, out, err = validate(valid_delivery)
    assert (code, out) == (1, "")
    assert err.startswith(f"rostersync validate: internal error while reading {valid_delivery} (KeyError at ")
    assert err.count("\n") == 1 and "Søndergaard" not in err


def test_the_profile_reaches_the_reader_and_the_validator(
    valid_delivery: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text("grade_map: {K: KG}\nmax_rejected_share: 0.1\n", encoding="utf-8")
    seen = []
    real_read, real_validate = validate_command.read_files, validate_command.validate_package

    def read(files, profile):
        seen.append(profile)
        return real_read(files, profile)

    def judge(package, *, profile):
        seen.append(profile)
        return real_validate(package, profile=profile)

    monkeypatch.setattr(validate_command, "read_files", read)
    monkeypatch.setattr(validate_command, "validate_package", judge)
    assert validate(valid_delivery, profile=profile_path)[0] == 0
    assert seen == [DistrictProfile.load(profile_path)] * 2


# --- the human report -----------------------------------------------------------------------------


def test_findings_are_grouped_by_file_then_rule_with_explanations_and_located_rows(delivery: Path) -> None:
    edit_cells(delivery, "users.csv", {(i, "role"): "Lehrer" for i in range(8)} | {(9, "enabledUser"): "yes"})
    report = validate_package(read_package_dir(delivery))
    text = format_human(report, max_rows_per_rule=3)
    section = text[text.index("\nusers.csv: ") :]
    assert section.startswith("\nusers.csv: 9 errors\n  value.enum: 8 errors\n    " + RULES["value.enum"])
    assert "    - line 2, column role, value 'Lehrer': " in section
    assert "    - ... and 5 more (all of them are in the JSON output)" in section
    assert "  value.boolean: 1 error\n" in section
    assert text.startswith("OneRoster 1.1 delivery: rejected\n  orgs.csv ")  # 9 users rows is over 2 %


def test_the_report_prints_no_cell_of_a_rejected_row_and_cuts_long_values(delivery: Path) -> None:
    original = edit_cells(delivery, "users.csv", {(0, "sourcedId"): "x" * 5000})
    with (delivery / "users.csv").open("a", encoding="utf-8") as stream:
        stream.write(",".join(original[2]) + ",extra\n")  # a row too wide: rejected, its cells unprinted
    text = format_human(validate_package(read_package_dir(delivery)))
    assert "x" * 61 not in text and "(5,000 chars)" in text
    personal = [original[2][original[0].index(column)] for column in ("givenName", "familyName", "email")]
    assert not any(value in text for value in personal)


def test_an_unreadable_file_is_marked_not_read_rather_than_empty(delivery: Path) -> None:
    (delivery / "enrollments.csv").write_bytes("sourcedId\nÉ".encode("latin-1"))
    text = validate(delivery)[1]
    assert "  enrollments.csv       bulk    not read (see below)\n" in text
    assert text.rstrip().splitlines()[-1].startswith("rejected: 1 fatal finding in enrollments.csv; ")


# --- summary and stored diagnostics ---------------------------------------------------------------


def test_summary_counts_rows_judged_and_rejected_per_file(delivery: Path) -> None:
    edit_cells(delivery, "enrollments.csv", {(0, "classSourcedId"): "no-such-class", (1, "role"): "pupil"})
    summary = summarize(validate_package(read_package_dir(delivery)))
    rows = generate_district(students=STUDENTS, seed=SEED).tables
    assert summary["files"] == {
        f"{entity}.csv": {"mode": "bulk", "rows": len(table), "rejected": 2 if entity == "enrollments" else 0}
        for entity, table in rows.items()
    }
    assert json.loads(json.dumps(summary)) == summary


def test_write_diagnostics_stores_json_and_csv(tmp_path: Path) -> None:
    diagnostics = [
        Diagnostic.create("error", "value.enum", "must be one of", file="users.csv", line=4, column="role", value="Teacher"),
        Diagnostic.create("error", "value.required", "required", file="users.csv", line=5, column="email", value="a@b.org"),
        Diagnostic.create("fatal", "manifest.missing", "no manifest"),
    ]
    json_path, csv_path = write_diagnostics(diagnostics, tmp_path / "archive" / "2026-01-01")
    assert (json_path.name, csv_path.name) == ("diagnostics.json", "diagnostics.csv")
    assert [Diagnostic(**d) for d in json.loads(json_path.read_text(encoding="utf-8"))] == diagnostics
    with csv_path.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["line"], r["value"]) for r in rows] == [("4", "Teacher"), ("5", "<masked: 7 chars>"), ("", "")]
