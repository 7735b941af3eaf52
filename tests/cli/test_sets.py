import json

import pytest
from click.testing import CliRunner

from cli.main import cli


def run(reg, *args: str):
    return CliRunner().invoke(cli, ["--db", reg.uri, *args], catch_exceptions=False)


def test_create_add_remove_show_and_diff(seeded):
    reg, ids = seeded
    made = run(reg, "sets", "create", "mg", "--query", '{"passed": true}', "--author", "ana", "-d", "first cut")
    assert made.exit_code == 0 and "created set mg (version 1, tunnel preset, Mg): 2 member(s)" in made.output
    assert "version 2 with 3 member(s)" in run(reg, "sets", "add", "mg", ids["CrO2"], "--note", "narrow").output
    assert "version 3 with 2 member(s)" in run(reg, "sets", "remove", "mg", ids["VO2"]).output

    shown = json.loads(run(reg, "sets", "show", "mg", "--version", "2", "--format", "json").output)
    assert shown["version"] == 2 and {m["registry_id"] for m in shown["members"]} == {ids["VO2"], ids["TiVO4"],
                                                                                       ids["CrO2"]}
    assert next(m for m in shown["members"] if m["registry_id"] == ids["CrO2"])["note"] == "narrow"
    diff = run(reg, "sets", "diff", "mg", "1", "3")
    assert f"+ {ids['CrO2']}" in diff.output and f"- {ids['VO2']}" in diff.output
    assert "1 added, 1 removed, 0 changed" in diff.output
    listed = run(reg, "sets", "list").output
    assert "mg" in listed and "ana" in listed


@pytest.mark.parametrize("args, message", [
    (("sets", "create", "mg"), "error: a set named 'mg' already exists"),
    (("sets", "add", "mg", "reg-0000000000000000"), "not in the registry: reg-0000000000000000"),
    (("sets", "show", "mg", "--version", "9"), "there is no version 9"),
    (("sets", "create", "x", "--query", "{oops"), "FILTER is not valid JSON"),
    (("sets", "import", "/nonexistent/bundle"), "no bundle at /nonexistent/bundle"),
    (("sets", "create", "q", "--query", '{"score": {"$bogus": 1}}'), "the database refused the query: unknown operator"),
    (("sets", "delete", "nope", "--yes"), "no set named 'nope'"),
])
def test_mistakes_are_one_line_and_exit_1(seeded, args, message):
    reg, _ = seeded
    run(reg, "sets", "create", "mg", "--query", '{"passed": true}')
    result = run(reg, *args)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr


def test_export_and_import_between_registries(seeded, registry, tmp_path):
    reg, _ = seeded
    run(reg, "sets", "create", "mg", "--query", '{"passed": true, "values.e_above_hull": {"$lt": 0.5}}')
    exported = run(reg, "sets", "export", "mg", str(tmp_path / "mg.tar.gz"))
    assert exported.exit_code == 0 and "2 member(s), 5 file(s)" in exported.output
    first = run(registry, "sets", "import", str(tmp_path / "mg.tar.gz"))
    assert "set mg: created; documents written 14, unchanged 0, conflicts kept 0" in first.output
    again = run(registry, "sets", "import", str(tmp_path / "mg.tar.gz"))
    assert "set mg: unchanged; documents written 0, unchanged 14" in again.output
    optimade = run(reg, "sets", "export", "mg", str(tmp_path / "mg.json"), "--format", "optimade")
    assert optimade.exit_code == 0 and len(json.loads((tmp_path / "mg.json").read_text())["data"]) == 2


def test_report_writes_one_html_file(seeded, tmp_path):
    reg, _ = seeded
    run(reg, "sets", "create", "mg", "--query", '{"passed": true}')
    result = run(reg, "report", "--set", "mg", str(tmp_path / "mg.html"))
    assert result.exit_code == 0 and (tmp_path / "mg.html").read_text().startswith("<!DOCTYPE html>")
    clash = run(reg, "report", "--set", "mg", "--ion", "Zn", str(tmp_path / "zn.html"))
    assert clash.exit_code == 1 and "leave out --preset and --ion" in clash.stderr


def test_an_empty_set_comes_with_a_warning_that_says_why(seeded):
    reg, _ = seeded
    unranked = run(reg, "sets", "create", "p", "--preset", "paper", "--top", "3")
    assert unranked.exit_code == 0 and "0 member(s)" in unranked.output
    assert unranked.stderr.strip() == ("warning: the set is empty: nothing is ranked under preset paper for Mg yet "
                                       "(registry build rank --preset paper --ion Mg)")
    unmatched = run(reg, "sets", "create", "none", "--query", '{"score": {"$gt": 99}}')
    assert "warning: the set is empty: no tunnel candidate for Mg matches" in unmatched.stderr


def test_delete_asks_first_and_says_the_versions_are_gone_for_good(seeded):
    reg, ids = seeded
    run(reg, "sets", "create", "mg", "--query", '{"passed": true}')
    run(reg, "sets", "add", "mg", ids["CrO2"])
    kept = CliRunner().invoke(cli, ["--db", reg.uri, "sets", "delete", "mg"], input="n\n")
    assert kept.exit_code == 1 and "2 version(s) cannot be recovered" in kept.stderr and "registry sets export" in kept.stderr
    assert "mg" in run(reg, "sets", "list").output
    deleted = run(reg, "sets", "delete", "mg", "--yes")
    assert deleted.exit_code == 0 and "deleted set mg (2 version(s)); not recoverable" in deleted.output
    assert "no sets yet" in run(reg, "sets", "list").output


def test_show_says_who_made_each_version_in_words(seeded):
    reg, ids = seeded
    run(reg, "sets", "create", "mg", "--query", '{"passed": true}', "--author", "make-demo")
    run(reg, "sets", "add", "mg", ids["CrO2"], "--author", "ana")
    assert "(created by make-demo," in run(reg, "sets", "show", "mg", "--version", "1").output
    assert "(members added by ana," in run(reg, "sets", "show", "mg").output


def test_set_tables_fit_80_columns_with_whole_headers_and_a_legend(seeded, monkeypatch):
    reg, _ = seeded
    monkeypatch.setenv("COLUMNS", "80")
    made = run(reg, "sets", "create", "mg", "--query", '{"passed": true}')
    lines = made.stdout.splitlines()
    header = lines[1].split()
    assert header == ["id", "formula", "passed", "score", "E_hull", "gap", "Df", "admits", "note"]
    assert all(len(line) <= 80 for line in lines) and "..." not in made.stdout and "…" not in made.stdout
    assert "E_hull: energy above the convex hull, eV/atom" in made.stdout
