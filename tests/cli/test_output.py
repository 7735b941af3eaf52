"""What a user reads: tables that fit an 80-column terminal, useful query defaults, full values in CSV and JSON,
and exit codes that tell a mistake (1) from a database that cannot be reached (2)."""

import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli.display import format_table
from cli.main import cli

TRUNCATED = ("…", "...")


def run(reg, *args: str):
    return CliRunner().invoke(cli, ["--db", reg.uri, *args], catch_exceptions=False)


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


def assert_fits(text: str, headers: list[str]) -> None:
    """Every line within 80 columns, no header cut short, each header whole on the header line (a stage's
    summary line names the database, as long as it is, and is left out)."""
    lines = [line for line in text.splitlines() if " -> " not in line]
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert not any(mark in text for mark in TRUNCATED)
    head = next(line for line in lines if line.split()[:1] == headers[:1])
    assert head.split() == headers


def test_the_build_top_table_fits_80_columns_with_a_legend(seeded, narrow):
    reg, _ = seeded
    built = run(reg, "build", "rank", "--top", "5")
    assert built.exit_code == 0, built.output
    assert_fits(built.stdout, ["formula", "origin", "passed", "score", "E_form", "E_hull", "gap", "Df", "id"])
    legend = " ".join(built.stdout.split())
    assert "E_form: formation energy, eV/atom; E_hull: energy above the convex hull, eV/atom" in legend


def test_a_rerun_reports_as_up_to_date_what_the_first_run_processed(seeded):
    reg, _ = seeded
    try:
        first = run(reg, "build", "rank", "--preset", "paper", "--top", "0")
        again = run(reg, "build", "rank", "--preset", "paper", "--top", "0")
        n = reg.count({"preset": "paper"}, collection="candidates")
    finally:
        reg.collection("candidates").delete_many({"preset": "paper"})
    assert f"rank       processed {n} (failed 0), up to date 0, held back 0" in first.stdout
    assert f"rank       processed 0 (failed 0), up to date {n}, held back 0" in again.stdout


def test_candidates_show_score_and_verdict_best_first_and_say_when_the_limit_cut(seeded, narrow):
    reg, _ = seeded
    shown = run(reg, "query", "-c", "candidates", "--limit", "3")
    assert_fits(shown.stdout, ["formula", "preset", "ion", "passed", "score", "E_hull", "gap", "Df", "id"])
    total = reg.count(collection="candidates")
    assert f"3 of {total} shown (--limit 3; --limit 0 for all)" in shown.stderr
    rows = list(csv.DictReader(io.StringIO(run(reg, "query", "-c", "candidates", "--format", "csv").stdout)))
    assert [r["passed"] for r in rows] == sorted((r["passed"] for r in rows), key=lambda p: p != "True")
    passing = [float(r["score"]) for r in rows if r["passed"] == "True"]
    assert passing == sorted(passing, reverse=True)
    everything = run(reg, "query", "-c", "candidates", "--limit", "0")
    assert f"{total} document(s) from" in everything.stderr


def test_funnel_rows_say_where_and_why(seeded, narrow):
    reg, _ = seeded
    reg.collection("funnel").insert_one({"registry_id": "reg-1", "formula_pretty": "NiO2", "preset": "tunnel",
                                         "ion": "Mg", "left_at": "relax",
                                         "reason": "relaxation exploded: energy diverged after three steps of FIRE"})
    try:
        shown = run(reg, "query", "-c", "funnel")
    finally:
        reg.collection("funnel").drop()
    assert_fits(shown.stdout, ["formula", "preset", "ion", "left_at", "reason"])
    assert "exploded: energy diverged" in shown.stdout and "FIRE" in shown.stdout  # wrapped, not cut


def test_unknown_fields_are_warned_about_and_operator_errors_are_one_line(seeded):
    reg, _ = seeded
    typo = run(reg, "query", "-c", "candidates", "--fields", "formula_pretty,scroe", "--sort", "-e_hull")
    assert typo.exit_code == 0
    assert typo.stderr.splitlines()[:2] == ["warning: no document in candidates has a field 'scroe'",
                                            "warning: no document in candidates has a field 'e_hull'"]
    bad = run(reg, "query", '{"score": {"$gte": 0.5, "$near": "x"}}', "-c", "candidates")
    assert bad.exit_code == 1
    [line] = bad.stderr.splitlines()
    assert line.startswith("error: the database refused the query: ") and "clusterTime" not in line


def test_csv_has_full_precision_and_lf_line_endings(seeded):
    reg, _ = seeded
    out = run(reg, "query", '{"preset": "tunnel"}', "-c", "candidates", "--fields", "registry_id,score",
              "--format", "csv").stdout
    assert "\r" not in out
    stored = {d["registry_id"]: d["score"] for d in reg.find({"preset": "tunnel"}, collection="candidates",
                                                             fields=["registry_id", "score"])}
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["registry_id"]: float(r["score"]) for r in rows} == stored
    as_json = json.loads(run(reg, "query", '{"preset": "tunnel"}', "-c", "candidates", "--format", "json",
                             "--limit", "0").stdout)
    assert {d["registry_id"]: d["score"] for d in as_json} == stored


def test_a_table_too_wide_for_the_terminal_becomes_one_block_per_record():
    rows = [{"registry_id": "reg-0123456789abcdef", "reason": "neither BVAnalyzer nor a composition guess gave "
             "oxidation states", "values": {"e_above_hull": 0.123456}}]
    wide = format_table(rows, ["registry_id", "reason", "values.e_above_hull"], width=80)
    assert wide[0].split() == ["id", "reason", "E_hull"] and all(len(line) <= 80 for line in wide)
    assert "oxidation states" in " ".join(wide)  # wrapped whole
    tall = format_table(rows, ["registry_id", "reason", "values.e_above_hull"], width=12)
    assert tall[:2] == ["-- 1 --", "id      reg-0123456789abcdef"]


def test_exit_codes_tell_a_mistake_from_an_unreachable_database(db_uri, tmp_path):
    unknown_option = CliRunner().invoke(cli, ["--db", db_uri, "query", "--bogus"])
    assert unknown_option.exit_code == 1
    huge_limit = CliRunner().invoke(cli, ["--db", db_uri, "query", "{}", "--limit", "1e20"], prog_name="registry")
    assert huge_limit.exit_code == 1 and huge_limit.stderr.splitlines() == [
        "error: Invalid value for '--limit' / '-n': '1e20' is not a valid integer. (see: registry query --help)"]
    bad_json = CliRunner().invoke(cli, ["--db", db_uri, "query", "{oops"])
    assert bad_json.exit_code == 1 and bad_json.stderr.startswith("error: FILTER is not valid JSON")


def test_a_missing_file_is_reported_before_anything_heavy_is_loaded(tmp_path):
    """It used to take 5 s: the science stack was imported, and the database started, before the path was looked at."""
    script = ("import sys; from click.testing import CliRunner; from cli.main import cli; "
              f"r = CliRunner().invoke(cli, ['--home', {str(tmp_path)!r}, 'ingest', '/no/such.cif']); "
              "print(r.exit_code, 'pymatgen' in sys.modules, r.stderr.strip())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "1 False error: /no/such.cif: no such file or folder"
    assert not (tmp_path / "server.json").exists()


def test_the_ingest_kinds_are_the_schemas():
    from cli.ingest import ORIGIN_KINDS
    from schemas.structure import OriginKind

    assert ORIGIN_KINDS == [k.value for k in OriginKind]


def test_pymatgen_says_nothing_about_noble_gas_electronegativity():
    """It printed a 'No Pauling electronegativity' warning per noble gas into `make demo`'s output."""
    script = ("import warnings; warnings.simplefilter('default'); import registry; from pymatgen.core import Element; "
              "[Element(e).X for e in ('He', 'Ne', 'Ar')]")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Pauling" not in proc.stderr
