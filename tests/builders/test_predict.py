import pytest
from pymatgen.core import Composition

from builders.chain import make_builder
from builders.run import run_builder
from registry.science.references import elemental_energy


def run(reg, stage, options):
    return run_builder(make_builder(reg, stage, options), stage, progress=False)


def test_formation_energy_and_band_gap_carry_their_models(loaded, fast):
    for stage in ("validate", "screen", "relax"):
        run(loaded, stage, fast)
    loaded.collection("relaxed").update_one({"formula_pretty": "MnO"}, {"$set": {"energy_per_atom": float("nan")}})
    report = run(loaded, "predict", fast)
    assert (report.processed, report.failed) == (3, 1)
    docs = {d["formula_pretty"]: d for d in loaded.find(collection="predicted")}
    assert docs["MnO"]["state"] == "failed" and "not a finite number" in docs["MnO"]["error"]
    mno2 = docs["MnO2"]
    expected = mno2["energy_per_atom"] - (elemental_energy("Mn") + 2 * elemental_energy("O")) / 3
    assert mno2["formation_energy_per_atom"] == pytest.approx(expected)
    assert Composition("MnO2").num_atoms == 3
    assert -2.5 < mno2["formation_energy_per_atom"] < -1.0  # MP: -1.78 eV/atom
    assert mno2["band_gap"] is not None and mno2["band_gap"] >= 0
    for name in ("formation_energy_per_atom", "band_gap"):
        assert mno2["predictions"][name]["model"] and mno2["predictions"][name]["version"]
    assert run(loaded, "predict", fast).processed == 0
