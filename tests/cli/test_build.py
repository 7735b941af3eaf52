from click.testing import CliRunner

from cli.main import cli


def test_build_insertion_takes_its_caps_and_reports_its_collection(db_uri, references, monkeypatch):
    result = CliRunner().invoke(cli, ["--db", db_uri, "build", "insertion"])
    assert result.exit_code == 0, result.output
    assert "insertion  processed 0 (failed 0)" in result.output and f"-> {db_uri.rsplit('/', 1)[1]}.insertion" in result.output

    seen = {}
    monkeypatch.setattr("cli.build.build", lambda reg, stage, options, **_: seen.update(stage=stage, options=options) or [])
    args = ["--ion", "Zn", "--insertion-ion", "Mg", "--insertion-ion", "Ca", "--insertion-sites", "2",
            "--insertion-levels", "3", "--insertion-configurations", "2", "--insertion-steps", "50",
            "--relax-batch", "32", "--device", "cuda"]
    assert CliRunner().invoke(cli, ["--db", db_uri, "build", "insertion", *args]).exit_code == 0
    o = seen["options"]
    assert seen["stage"] == "insertion" and o.ion == "Zn" and o.insertion_ions == ("Mg", "Ca")
    assert (o.insertion_sites, o.insertion_levels, o.insertion_configurations, o.insertion_steps) == (2, 3, 2, 50)
    assert (o.relax_batch, o.device) == (32, "cuda")
