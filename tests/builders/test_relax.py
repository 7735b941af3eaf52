from dataclasses import replace

import pytest

from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from registry.science.potentials import ModelCheckError
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
    """Pyrolusite's 1x1 tunnel (Df 0.58 Å) and rock salt are far narrower than Mg2+ (2 r = 1.14 Å): the tunnel
    preset, which needs the channel to admit the ion, relaxes none of them; its funnel says why."""
    run(loaded, "validate", fast)
    tunnel = BuildOptions(steps=5, fmax=0.2, scope={})  # the default channel margin, 0.4 Å
    run(loaded, "screen", tunnel)
    screened = {d["formula_pretty"]: d for d in loaded.find(collection="screened")}
    assert set(screened) == {"MnO2", "MgMnO2", "MnO"}
    for d in screened.values():
        assert set(d["static_free_sphere"]) == {"Mg", "Zn", "Ca", "Al"} and d["static_channel_error"] is None
        assert 0 < d["static_free_sphere"]["Mg"] < 1.14 - 0.4
    assert screened["MnO2"]["static_free_sphere"]["Mg"] == pytest.approx(0.579, abs=0.01)
    assert run(loaded, "relax", tunnel).gated == 3
    run(loaded, "funnel", tunnel)
    reasons = {d["formula_pretty"]: d["reason"] for d in loaded.find({"left_at": "screen"}, collection="funnel")}
    assert set(reasons) == {"MnO2", "MgMnO2", "MnO"}
    assert all(r.startswith("static free sphere for Mg") for r in reasons.values())

    report = run(loaded, "relax", BuildOptions(steps=5, fmax=0.2, scope={}, channel_margin=1.14))  # 2 r - 1.14 = 0
    assert report.processed == 3 and report.gated == 0
