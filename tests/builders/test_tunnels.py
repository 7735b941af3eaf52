from datetime import UTC, datetime

import pytest
from pymatgen.core import Lattice, Structure

from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from registry.science.channels import ion_limits, thresholds


def relaxed(registry_id: str, structure: Structure) -> dict:
    return {"registry_id": registry_id, "state": "successful", "formula_pretty": structure.composition.reduced_formula,
            "chemsys": structure.composition.chemical_system, "structure": structure.as_dict(),
            "last_updated": datetime.now(UTC)}


def test_tunnels_on_the_reference_frameworks(registry, shared_data):
    refs = {p.name.split("_")[0]: Structure.from_file(p) for p in (shared_data / "tunnel_references").glob("*.cif")}
    docs = [relaxed(name, s) for name, s in refs.items()]
    docs.append(relaxed("broken", Structure(Lattice.cubic(3.0), ["Xe"], [[0, 0, 0]])))  # nothing to analyse
    registry.collection("relaxed").insert_many(docs)
    everything = BuildOptions(ions=("Mg",), exhaustive=True)  # no stability documents: analyse all
    report = run_builder(make_builder(registry, "tunnels", everything), "tunnels", progress=False)
    assert report.processed == 5
    out = {d["registry_id"]: d for d in registry.find(collection="tunnels")}
    hollandite, pyrolusite = out["beta-FeOOH"], out["beta-MnO2"]
    assert hollandite["free_sphere"] > pyrolusite["free_sphere"]
    assert hollandite["has_1d_channel"]
    # the 2x2 tunnel runs along the tetragonal c axis (3.09 Å); the CIF's primitive cell calls that [1 1 0]
    assert hollandite["report"]["channel_axis"]["repeat"] == pytest.approx(3.09, abs=0.05)
    assert hollandite["admits"]["Mg"] is True and hollandite["dimensionality"]["Mg"] == 1
    assert hollandite["report"]["ions"]["Mg"]["e_1d"] is not None
    # the 1x1 tunnel is too narrow for Mg2+; anatase's Mg paths are a 3-D network, not a tunnel
    assert pyrolusite["admits"]["Mg"] is False and pyrolusite["dimensionality"]["Mg"] == 1
    assert out["anatase"]["dimensionality"]["Mg"] == 3 and out["anatase"]["admits"]["Mg"] is False
    assert hollandite["report"]["ions"]["Mg"]["limits"]["min_free_sphere"] == ion_limits("Mg").min_free_sphere
    assert hollandite["provenance"]["parameters"]["calibration"] == thresholds()[1]
    assert out["broken"]["state"] == "failed" and out["broken"]["error"]
    assert report.failed == 1
    again = run_builder(make_builder(registry, "tunnels", everything), "tunnels", progress=False)
    assert again.processed == 0


def test_only_structures_under_the_presets_hull_limit_are_analysed(registry, shared_data):
    refs = [Structure.from_file(p) for p in sorted((shared_data / "tunnel_references").glob("*.cif"))]
    registry.collection("relaxed").insert_many([relaxed(f"s{i}", s) for i, s in enumerate(refs)])
    registry.collection("stability").insert_many([
        {"registry_id": f"s{i}", "state": "successful", "e_above_hull": e, "last_updated": datetime.now(UTC)}
        for i, e in enumerate((0.02, 0.3, 0.1, 0.5))])
    report = run_builder(make_builder(registry, "tunnels", BuildOptions(ions=("Mg",))), "tunnels", progress=False)
    assert (report.processed, report.gated) == (2, 2)  # the tunnel preset's limit is 0.1 eV/atom
    assert {d["registry_id"] for d in registry.find(collection="tunnels")} == {"s0", "s2"}
