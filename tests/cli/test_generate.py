"""`registry generate`: CDVAE samples and substitutions into a fresh database, with summaries that add up."""

from __future__ import annotations

import re

from click.testing import CliRunner

from cli.main import cli
from registry.db.client import Registry
from registry.science.frameworks import load_frameworks

SAMPLES = "gaibm_2410.06433/eval_gen_arrays.npz"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def numbers(pattern: str, text: str) -> tuple[int, ...]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return tuple(int(g) for g in match.groups())


def test_generate_cdvae_reports_counts_that_add_up(db_uri, shared_data):
    result = run("--db", db_uri, "generate", "cdvae", str(shared_data / SAMPLES), "--filter", "oxides",
                 "--limit", "200")
    assert result.exit_code == 0, result.output
    samples, parsed, rejected, filtered = numbers(r"samples (\d+): parsed (\d+), rejected (\d+), filtered (\d+)",
                                                  result.output)
    assert samples == 200 == parsed + rejected + filtered and filtered > 0
    read, ingested, updated, unchanged, bad = numbers(
        r"read (\d+): ingested (\d+), updated (\d+), unchanged (\d+), rejected (\d+)", result.output)
    assert read == parsed + rejected == ingested + updated + unchanged + bad
    assert re.search(r"validity of \d+ records \(CDVAE's definitions\): composition 0\.\d+, structure [01]\.\d+, overall",
                     result.output)

    reg = Registry(db_uri)
    assert reg.count({"origin.source": "cdvae", "elements": {"$ne": "O"}}) == 0
    assert reg.count({"origin.source": "cdvae"}) == ingested
    (run_doc,) = reg.find({}, collection="generation_runs")
    assert (run_doc["produced"], run_doc["filtered"]) == (read, filtered)
    assert f"run {run_doc['run_id']}" in result.output and f"{reg.database}.generation_runs" in result.output


def test_generate_substitute_on_ingested_tunnel_references(db_uri, shared_data):
    assert run("--db", db_uri, "ingest", str(shared_data / "tunnel_references")).exit_code == 0
    first = run("--db", db_uri, "generate", "substitute", "--max-per-parent", "5")
    assert first.exit_code == 0, first.output
    assert numbers(r"frameworks (\d+): skipped (\d+)", first.output) == (4, 0)
    new = numbers(r"kept (\d+)", first.output)[0]
    assert numbers(r"ingested (\d+)", first.output)[0] == new > 0

    reg = Registry(db_uri)
    known = {d["registry_id"] for d in reg.find({"origin.kind": "mined"}, fields=["registry_id"])}
    generated = reg.find({"origin.source": "substitution"}, fields=["origin", "formula_pretty"])
    assert len(generated) == new
    assert all(d["origin"]["kind"] == "generated" and d["origin"]["parameters"]["parent"] in known
               and d["origin"]["parameters"]["substitution"] for d in generated)

    again = run("--db", db_uri, "generate", "substitute", "--max-per-parent", "5")
    # a re-run keeps the same structures and writes none of them anew: no count says "new" for them
    assert numbers(r"kept (\d+)", again.output)[0] == new and "new structures" not in again.output
    assert f"read {new}: ingested 0, updated 0, unchanged {new}" in again.output


def test_generate_substitute_from_a_prototype_cif_names_the_id_ingest_would_give(db_uri, shared_data):
    cif = shared_data / "tunnel_references" / "beta-MnO2_pyrolusite_1x1_mp-510408.cif"
    result = run("--db", db_uri, "generate", "substitute", "--prototype", str(cif), "--max-per-parent", "3",
                 "--ions", "Mg")
    assert result.exit_code == 0, result.output
    run("--db", db_uri, "ingest", str(cif))
    reg = Registry(db_uri)
    (parent,) = reg.find({"origin.kind": "mined"}, fields=["registry_id"])
    parents = {d["origin"]["parameters"]["parent"] for d in reg.find({"origin.source": "substitution"})}
    assert parents == {parent["registry_id"]}
    (run_doc,) = reg.find({}, collection="generation_runs")
    assert run_doc["parameters"]["ions"] == ["Mg"] and run_doc["parameters"]["selection"]["prototypes"] == [str(cif)]


def test_generate_substitute_on_the_tunnel_hosts_of_the_framework_library(db_uri):
    result = run("--db", db_uri, "generate", "substitute", "--framework", "tunnel", "--max-per-parent", "2",
                 "--ions", "Mg")
    assert result.exit_code == 0, result.output
    hosts = [fw.id for fw in load_frameworks() if fw.role == "host"]
    assert numbers(r"frameworks (\d+): skipped (\d+)", result.output) == (len(hosts), 0)
    generated = Registry(db_uri).find({"origin.source": "substitution"}, fields=["origin"])
    parents = {d["origin"]["parameters"]["parent"] for d in generated}
    assert parents == {f"framework:{fid}" for fid in hosts}  # rutile, anatase and brookite are not hosts
    # the post-spinel's tunnel cation is replaced by the working ion: a Mg host of the CaFe2O4 type
    assert any(d["origin"]["parameters"]["parent"] == "framework:calcium-ferrite_CaFe2O4"
               and d["origin"]["parameters"]["substitution"].get("Ca2+") == "Mg2+" for d in generated)

    unknown = CliRunner().invoke(cli, ["--db", db_uri, "generate", "substitute", "--framework", "nope"])
    assert unknown.exit_code == 1 and "no framework 'nope'" in unknown.output and "tunnel" in unknown.output


def test_generate_substitute_without_frameworks_is_a_clear_error(db_uri):
    result = CliRunner().invoke(cli, ["--db", db_uri, "generate", "substitute"])
    assert result.exit_code == 1
    assert "no frameworks" in result.output
