"""Two tiers: CHGNet relaxes, SevenNet recomputes the energy of what is still in the running."""

import time
from dataclasses import replace

import pytest
from pymatgen.core import Composition

from builders.chain import STAGES, build, make_builder
from builders.run import run_builder
from registry.science.references import formation_energy_per_atom

FORMULAS = {"MnO2", "MgMnO2", "MnO"}


def run(reg, stage, options):
    return run_builder(make_builder(reg, stage, options), stage, progress=False)


def by_formula(reg, collection, **query):
    return {d["formula_pretty"]: d for d in reg.find(query, collection=collection)}


def test_the_refined_energy_replaces_the_relaxed_one_in_stability_and_rank(loaded, fast, references):
    two_tiers = replace(fast, refine_potential="sevenn:7net-0", refine_margin=10.0)  # every relaxed one is in
    build(loaded, "all", two_tiers, progress=False)
    relaxed, refined = by_formula(loaded, "relaxed"), by_formula(loaded, "refined")
    predicted, stability = by_formula(loaded, "predicted"), by_formula(loaded, "stability")
    candidates = by_formula(loaded, "candidates", preset="tunnel", ion="Mg")
    assert set(refined) == FORMULAS
    for formula, r in refined.items():
        tier_one = relaxed[formula]
        assert r["refined"] and r["tier_one_energy_per_atom"] == tier_one["energy_per_atom"]  # both energies kept
        assert tier_one["potential"]["name"] == "CHGNet" and r["potential"]["name"] == "SevenNet 7net-0"
        assert r["potential"]["energy_correction"].startswith("MaterialsProject2020Compatibility")
        assert abs(r["energy_per_atom"] - tier_one["energy_per_atom"]) > 1e-4  # another model: another number
        e_form_one = formation_energy_per_atom(Composition(formula), tier_one["energy_per_atom"])

        p = predicted[formula]
        assert p["energy_source"] == "refined" and p["energy_per_atom"] == r["energy_per_atom"]
        assert p["formation_energy_per_atom"] == pytest.approx(r["formation_energy_per_atom"])
        assert p["predictions"]["formation_energy_per_atom"]["model"] == "SevenNet 7net-0"
        kept = p["predictions"]["tier_one_formation_energy_per_atom"]
        assert kept["model"] == "CHGNet" and kept["value"] == pytest.approx(e_form_one)

        s = stability[formula]
        assert s["formation_energy_per_atom"] == p["formation_energy_per_atom"] and s["energy_source"] == "refined"
        assert s["energy_model"].startswith("SevenNet 7net-0 [sevenn ")
        # the same reference hull, moved by the change of E_form
        shift = r["formation_energy_per_atom"] - e_form_one
        assert s["e_above_hull"] == pytest.approx(r["tier_one_e_above_hull"] + shift, abs=1e-6)

        c = candidates[formula]
        assert c["values"]["formation_energy_per_atom"] == p["formation_energy_per_atom"]
        assert c["values"]["e_above_hull"] == s["e_above_hull"] and c["values"]["energy_source"] == "refined"
        assert next(v for v in c["criteria"] if v["name"] == "e_above_hull")["value"] == s["e_above_hull"]
    assert {d["energy_source"] for d in loaded.find({"formula_pretty": {"$in": sorted(FORMULAS)}},
                                                   collection="funnel")} == {"refined"}

    again = build(loaded, "all", two_tiers, progress=False)
    assert {r.stage: r.processed for r in again} == dict.fromkeys(STAGES, 0)


def test_only_what_is_within_the_cut_is_refined_and_a_wider_cut_adds_the_rest(loaded, fast, references):
    for stage in ("validate", "screen", "relax"):
        run(loaded, stage, fast)
    time.sleep(1.1)  # past a build record's second of margin: a rerun below is a no-op from its record alone
    narrow = replace(fast, refine_potential="sevenn:7net-0", refine_margin=-10.0)  # cut 0.1 - 10: nothing is in
    wide = replace(narrow, refine_margin=10.0)

    assert run(loaded, "refine", narrow).processed == 3
    held = by_formula(loaded, "refined")
    assert not any(d["refined"] for d in held.values())
    assert all(d["energy_per_atom"] is None and "above the cut -9.900" in d["reason"] for d in held.values())
    run(loaded, "predict", narrow)
    assert {d["energy_source"] for d in loaded.find(collection="predicted")} == {"relaxed"}
    assert run(loaded, "refine", narrow).processed == 0

    assert run(loaded, "refine", wide).processed == 3  # left unrefined, now within the cut: not a no-op
    assert all(d["refined"] for d in loaded.find(collection="refined"))
    assert run(loaded, "predict", wide).processed == 3
    assert {d["energy_source"] for d in loaded.find(collection="predicted")} == {"refined"}

    assert run(loaded, "refine", narrow).processed == 0  # the cut is a gate: what is refined stays refined
    assert run(loaded, "predict", narrow).processed == 0

    off = replace(fast, refine_potential="none")
    assert make_builder(loaded, "refine", off) is None
    assert run(loaded, "predict", off).processed == 3  # back to the relaxation's energies
    assert {d["energy_source"] for d in loaded.find(collection="predicted")} == {"relaxed"}
