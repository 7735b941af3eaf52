import json
import subprocess
import sys

from click.testing import CliRunner

from cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_unreachable_database_is_one_clear_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "cli", "--db", "mongodb://user:pw@127.0.0.1:9/reg", "stats"],
                          capture_output=True, text=True, timeout=60, env={"REGISTRY_TIMEOUT_MS": "1000", "PATH": ""})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database")
    assert "pw" not in proc.stderr and "user" not in proc.stderr


def test_ingest_query_and_stats(db_uri, shared_data):
    result = run("--db", db_uri, "ingest", str(shared_data / "tunnel_references"))
    assert result.exit_code == 0
    assert "read 4: ingested 4" in result.output
    rows = json.loads(run("--db", db_uri, "query", '{"elements": "Ti"}', "--format", "json",
                          "--fields", "formula_pretty,symmetry.number").output)
    assert sorted(r["symmetry"]["number"] for r in rows) == [136, 141]
    csv_out = run("--db", db_uri, "query", "{}", "--format", "csv", "--fields", "formula_pretty", "--sort",
                  "formula_pretty").output
    assert csv_out.splitlines() == ["formula_pretty", "FeHO2", "MnO2", "TiO2", "TiO2"]
    stats = run("--db", db_uri, "stats").output
    assert "structures" in stats and "mined" in stats


def test_a_bad_filter_is_a_clear_error(db_uri):
    result = CliRunner().invoke(cli, ["--db", db_uri, "query", "{not json"])
    assert result.exit_code == 1


def test_a_potential_that_cannot_be_used_stops_the_build_in_one_line(db_uri, references, shared_data):
    run("--db", db_uri, "ingest", str(shared_data / "tunnel_references"))
    run("--db", db_uri, "build", "validate")
    for potential, reason in (("mace", "unknown potential spec"), ("matgl:/nowhere", "not a local model folder")):
        result = CliRunner().invoke(cli, ["--db", db_uri, "build", "relax", "--exhaustive", "--scope", "{}",
                                          "--potential", potential])
        assert result.exit_code == 1, result.output
        assert reason in result.output and "Traceback" not in result.output
    assert run("--db", db_uri, "query", "{}", "--collection", "relaxed", "--format", "json").output.strip() == "[]"
