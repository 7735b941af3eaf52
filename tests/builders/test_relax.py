import pytest

from registry.build import run_builder
from registry.pipeline import BuildOptions, make_builder
from registry.potentials import ModelCheckError


def run(reg, stage, options):
    return run_builder(make_builder(reg, stage, options), stage, progress=False)


def test_relax_records_the_outcome_and_the_model(loaded, fast):
    run(loaded, "validate", fast)
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
    legacy = shared_data / "matgl_pretrained" / "M3GNet-MP-2021.2.8-PES"
    options = BuildOptions(steps=5, potential=f"matgl:{legacy}")
    with pytest.raises(ModelCheckError, match="fails the model check"):
        run(loaded, "relax", options)
    assert loaded.count(collection="relaxed") == 0
