"""`registry dft`: export, ingest, compare and parity from the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import COMMANDS, cli
from tests.builders.test_dft import MNO2_CORRECTION
from tests.registry.test_dft import fluorite, mp_entry, seed, strained, write_json


@pytest.fixture(autouse=True)
def dft_command(monkeypatch):
    """`registry dft` as cli.main registers it."""
    monkeypatch.setitem(COMMANDS, "dft", ("cli.dft:dft", "Validate candidates with DFT."))


def run(db_uri: str, *args: str):
    return CliRunner().invoke(cli, ["--db", db_uri, "dft", *args])


def test_export_ingest_compare_parity(registry, db_uri, tmp_path):
    ids = seed(registry)
    out = tmp_path / "vasp"
    result = run(db_uri, "export", str(out))
    assert result.exit_code == 0 and "wrote 1 structure folder(s)" in result.output
    [entry] = json.loads((out / "manifest.json").read_text())["structures"]
    # the calculation comes back as a JSON entry inside the exported folder
    write_json(out / entry["directory"] / "static" / "result.json",
               mp_entry(strained(fluorite()), MNO2_CORRECTION, -1.75, data={"band_gap": 0.4}))
    result = run(db_uri, "ingest", str(out))
    assert "read 1: ingested 1" in result.output and "linked     1 by manifest" in result.output
    assert "read 1: ingested 0, updated 0, unchanged 1" in run(db_uri, "ingest", str(out)).output

    result = run(db_uri, "compare")
    assert result.exit_code == 0 and "processed      1  failed     0" in result.output
    [doc] = registry.find(collection="dft_comparison")
    assert doc["registry_id"] == ids["fluorite"] and doc["dft_validated"]  # E_hull 0.05 <= 0.1, structure kept

    result = run(db_uri, "parity", "--preset", "tunnel", "--ion", "Mg")
    assert result.exit_code == 0
    assert "1 comparison(s), 1 DFT-validated" in result.output and "E_hull <= 0.1" in result.output


def test_export_errors_are_clear(registry, db_uri, tmp_path):
    seed(registry)
    result = run(db_uri, "export", "--set", "shortlist", str(tmp_path / "x"))
    assert result.exit_code == 1 and "no set named 'shortlist'" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    result = run(db_uri, "export", str(tmp_path / "full"))
    assert result.exit_code == 1 and "use --force" in result.output
