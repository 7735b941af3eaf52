import json

from click.testing import CliRunner

from cli.main import cli
from tests.generators.tiny_lm import build_tiny_base_model


def test_finetune_then_sample_end_to_end_on_a_tiny_local_model(db_uri, shared_data, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db_uri, "ingest", str(shared_data / "tunnel_references")]).exit_code == 0
    base = build_tiny_base_model(tmp_path / "base")
    out = tmp_path / "tuned"
    result = runner.invoke(cli, ["--db", db_uri, "llm", "finetune", "--base", str(base), "--out", str(out),
                                 "--query", '{"elements": "O"}', "--epochs", "1", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["n_structures"] == 4 and card["data_query"]["filter"] == {"elements": "O"}

    result = runner.invoke(cli, ["--db", db_uri, "generate", "llm", "--model", str(out), "-n", "4",
                                 "--max-new-tokens", "40", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "read 4:" in result.output
    run = runner.invoke(cli, ["--db", db_uri, "query", "{}", "-c", "generation_runs", "--format", "json",
                              "--fields", "generator,produced,parsed,rejected"])
    [doc] = json.loads(run.output)
    assert doc["generator"] == "llm" and doc["produced"] == 4 == doc["parsed"] + doc["rejected"]


def test_finetune_with_no_matching_structures_is_a_clear_error(db_uri, tmp_path):
    result = CliRunner().invoke(cli, ["--db", db_uri, "llm", "finetune", "--base", str(tmp_path), "--out",
                                      str(tmp_path / "o"), "--query", '{"elements": "Xx"}'])
    assert result.exit_code == 1 and "no structures match" in result.output
