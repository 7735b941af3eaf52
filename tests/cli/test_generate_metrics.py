"""`registry generate metrics`: a run's SUN figures as an 80-column table beside the published MP-20 rows, kept up
to date by `registry build` (the hand-made run of tests/sun_run.py)."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import cli
from tests.sun_run import hand_made_run


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_metrics_prints_the_run_beside_the_published_rows(references, db_uri):
    run_id, _ = hand_made_run(references)
    result = run("--db", db_uri, "generate", "metrics", run_id)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"run {run_id}"
    assert lines[1].split() == ["this", "run", "CDVAE", "DiffCSP", "MatterGen"]
    rows = {line[:30].strip(): line[30:].split() for line in lines[2:12]}
    assert rows["stable, of all samples"] == ["0.444", "4/9", "0.243", "0.413", "0.471"]
    assert rows["stable, of those with E_hull"] == ["0.800", "4/5", "-", "-", "-"]
    assert rows["SUN, of all samples"][:3] == ["0.222", "2/9", "0.183"]
    assert rows["mean RMSD (Å)"][:3] == ["0.040", "n=5", "0.479"]
    assert "9 samples: 1 rejected, 1 failed validation, 7 compared" in result.output
    assert max(len(line) for line in lines) <= 80


def test_build_updates_the_figures_of_the_runs_it_touched(references, db_uri):
    run_id, _ = hand_made_run(references)
    first = run("--db", db_uri, "build", "validate", "--force")  # a build that processed something
    assert f"generation run {run_id}: stable 0.444, SUN 0.222 of 9 samples (5 with an E_hull, 1 pending)" in first.output
    again = run("--db", db_uri, "build", "validate", "--force")
    assert "generation run" not in again.output  # the figures did not change: nothing said


def test_metrics_without_runs(db_uri):
    result = run("--db", db_uri, "generate", "metrics")
    assert result.exit_code == 0 and "no generation runs" in result.output
