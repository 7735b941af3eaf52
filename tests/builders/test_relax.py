from dataclasses import replace

import pytest

from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from registry.io.ingest import Ingestor
from registry.science.channels import ion_limits
from registry.science.criteria import get_preset
from registry.science.potentials import ModelCheckError
from registry.science.relaxation import MAX_VOLUME_CHANGE
from tests.builders.conftest import generated, rocksalt
from tests.paths import require


def run(reg, stage, options):
    return run_builder(make_builder(reg, stage, options), stage, progress=False)


def test_relax_records_the_outcome_and_the_model(loaded, fast):
    run(loaded, "validate", fast)
    assert run(loaded, "relax", fast).processed == 0  # nothing screened yet: relax takes only what the screen passed
    run(loaded, "screen", fast)
    report = run(loaded, "relax", fast)
    assert report.processed == 3  # MnO2 (one for two duplicates), MgMnO2, MnO; never the invalid NaCl2
    docs = loaded.find(collection="relaxed")
    assert {d["formula_pretty"] for d in docs} == {"MnO2", "MgMnO2", "MnO"}
    for d in docs:
        assert d["state"] == "successful"
        assert d["status"] in ("converged", "unconverged") and d["steps"] <= 5
        assert d["energy_per_atom"] < 0 and d["fmax"] == 0.2 and d["max_steps"] == 5
        assert d["potential"]["name"].lower().startswith("chgnet") and d["potential"]["model_check_max_error"] < 0.1
        assert d["structure"] is not None and d["input_structure"] is not None
        assert d["energy_per_atom"] <= d["initial_energy_per_atom"] + 1e-3
    assert run(loaded, "relax", fast).processed == 0


def test_a_wrong_model_is_refused_and_nothing_is_written(loaded, fast, shared_data):
    run(loaded, "validate", fast)
    legacy = require(shared_data / "matgl_pretrained" / "M3GNet-MP-2021.2.8-PES")
    for stage, exhaustive in (("screen", False), ("relax", True)):  # exhaustive: relax without a screen first
        with pytest.raises(ModelCheckError, match="fails the model check"):
            run(loaded, stage, BuildOptions(steps=5, potential=f"matgl:{legacy}", scope={}, exhaustive=exhaustive))
    assert loaded.count(collection="screened") == 0 and loaded.count(collection="relaxed") == 0


def test_the_screen_holds_back_what_relaxation_cannot_rescue(loaded, fast):
    run(loaded, "validate", fast)
    loose = replace(fast, margin=0.5)
    strict = replace(fast, margin=-5.0)  # nothing can pass: E_hull <= 0.1 - 5
    assert run(loaded, "screen", strict).processed == 3
    report = run(loaded, "relax", strict)
    assert report.processed == 0 and report.gated == 3
    assert all(d["static_e_above_hull"] > 0.1 - 5.0 for d in loaded.find(collection="screened"))
    screened = {d["registry_id"]: d["static_e_above_hull"] for d in loaded.find(collection="screened")}
    relaxed = run(loaded, "relax", loose)
    assert relaxed.processed == sum(1 for v in screened.values() if v <= 0.6)


def test_the_screen_holds_back_frameworks_too_dense_for_the_ion(loaded, fast):
    """Pyrolusite's 1x1 tunnel (Df 0.58 Å) and rock-salt MnO are far narrower than the least free sphere that
    admits Mg2+ (1.03 Å, docs/channels.md), even allowing relaxation the channel margin (0.4 Å): the tunnel preset,
    which needs the channel to admit the ion, relaxes neither; its funnel says why. MgMnO2 without its own Mg is
    within the margin (Df 0.69 Å) and goes on to relaxation."""
    run(loaded, "validate", fast)
    tunnel = BuildOptions(steps=5, fmax=0.2, scope={})  # the default channel margin, 0.4 Å
    run(loaded, "screen", tunnel)
    screened = {d["formula_pretty"]: d for d in loaded.find(collection="screened")}
    assert set(screened) == {"MnO2", "MgMnO2", "MnO"}
    limit = ion_limits("Mg").min_free_sphere - 0.4
    for d in screened.values():
        assert set(d["static_free_sphere"]) == {"Mg", "Zn", "Ca", "Al"} and d["static_channel_error"] is None
    assert screened["MnO2"]["static_free_sphere"]["Mg"] == pytest.approx(0.579, abs=0.01)
    assert {f for f, d in screened.items() if d["static_free_sphere"]["Mg"] < limit} == {"MnO2", "MnO"}
    assert run(loaded, "relax", tunnel).gated == 2
    run(loaded, "funnel", tunnel)
    reasons = {d["formula_pretty"]: d["reason"] for d in loaded.find({"left_at": "screen"}, collection="funnel")}
    assert set(reasons) == {"MnO2", "MnO"}
    assert all(r.startswith("static free sphere for Mg") for r in reasons.values())

    report = run(loaded, "relax", BuildOptions(steps=5, fmax=0.2, scope={}, channel_margin=1.14))  # limit below 0
    assert report.processed == 2 and report.gated == 0


def test_a_relaxation_that_swells_the_cell_is_flagged_and_the_funnel_shows_it(loaded, fast):
    """Rock-salt NiO squeezed to a = 3.70 Å (4.17 Å in nature) relaxes back by ~+40% in volume: converged, but not
    the structure that went in, so its document says so and the tunnel preset refuses it."""
    squeezed = rocksalt(3.70, ("Ni", "O"))
    Ingestor(loaded).write([generated("squeezed-nio", squeezed)])
    options = replace(fast, exhaustive=True)  # no screen: relax everything valid
    run(loaded, "validate", options)
    run(loaded, "relax", options)
    docs = {d["formula_pretty"]: d for d in loaded.find(collection="relaxed")}
    nio, mno = docs["NiO"], docs["MnO"]
    assert nio["state"] == "successful" and nio["volume_change"] > MAX_VOLUME_CHANGE
    assert nio["relaxation_sane"] is False and nio["warnings"][0].startswith("volume changed by +")
    assert mno["relaxation_sane"] is True and mno["warnings"] == []
    assert any(c.name == "relaxation_sane" and c.hard for c in get_preset("tunnel").criteria)
    run(loaded, "funnel", options)
    [funnel] = loaded.find({"formula_pretty": "NiO"}, collection="funnel")
    assert funnel["warnings"] == nio["warnings"]


def test_relax_with_sevenn_passes_the_model_check_and_records_the_model(loaded, fast):
    """SevenNet's raw GGA/GGA+U energies come out on the MP2020-compatible scale, and each document says which
    weights made them and which correction was added."""
    sevenn = replace(fast, potential="sevenn:7net-0")
    for stage in ("validate", "screen", "relax"):
        run(loaded, stage, sevenn)
    docs = {d["formula_pretty"]: d for d in loaded.find(collection="relaxed")}
    assert set(docs) == {"MnO2", "MgMnO2", "MnO"}
    for d in docs.values():
        info = d["potential"]
        assert d["state"] == "successful" and info["spec"] == "sevenn:7net-0" and info["name"] == "SevenNet 7net-0"
        assert info["model_check_max_error"] < 0.1 and len(info["checkpoint_sha256"]) == 64
        assert info["energy_correction"].startswith("MaterialsProject2020Compatibility")
    assert docs["MnO2"]["energy_per_atom"] == pytest.approx(-8.13, abs=0.05)  # MP's MP2020-compatible -8.128
    assert run(loaded, "relax", sevenn).processed == 0


def test_a_sevenn_path_that_is_not_a_potential_stops_the_build_in_one_line(loaded, references, db_uri, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    db = ["--db", db_uri]
    assert CliRunner().invoke(cli, [*db, "build", "validate"]).exit_code == 0
    result = CliRunner().invoke(cli, [*db, "build", "relax", "--exhaustive", "--scope", "{}",
                                      "--potential", f"sevenn:{notes}"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: sevenn:{notes} is not a SevenNet checkpoint: torch cannot read it as a weights file")
    assert loaded.count(collection="relaxed") == 0
