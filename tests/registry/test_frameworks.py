"""The framework library: every spec builds, its CIF is that build, and the build is chemically sane (declared space
group, density from Z and the cell, metal-oxygen bond lengths, no close contacts). A wrong oxygen coordinate shows up
here as an absurd bond or contact; a wrong multiplicity or a missing site as a wrong density."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from registry.science.frameworks import Framework, framework_path, get_framework, load_frameworks, select_frameworks

FRAMEWORKS = load_frameworks()
IDS = [fw.id for fw in FRAMEWORKS]
REQUIRED = {"hollandite_alpha-MnO2", "ramsdellite_MnO2", "pyrolusite_beta-MnO2", "todorokite_MnO2",
            "romanechite_MnO2", "calcium-ferrite_CaFe2O4", "bronze_TiO2-B", "bronze_VO2-B", "hexagonal_WO3",
            "rutile_TiO2", "anatase_TiO2", "brookite_TiO2"}


@pytest.fixture(scope="module")
def built() -> dict[str, Structure]:
    return {fw.id: fw.structure() for fw in FRAMEWORKS}


def test_library_has_the_required_frameworks():
    assert REQUIRED <= set(IDS)
    assert len(IDS) == len(set(IDS))
    for fw in FRAMEWORKS:
        assert fw.role in {"host", "dense non-host"}
        assert fw.coordinates_status in {"published", "recalled", "recalled-corrected", "model"}
        assert fw.reference.authors and fw.reference.journal and fw.reference.year
        assert fw.coordinates_note


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_builds_with_its_formula(fw: Framework, built):
    s = built[fw.id]
    assert s.is_ordered
    assert s.composition.reduced_formula == Composition(fw.formula).reduced_formula
    assert s.composition.get_reduced_composition_and_factor()[1] == pytest.approx(fw.z)


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_cif_matches_the_spec_build(fw: Framework, built):
    path = framework_path(fw.id)
    assert path.is_file()
    text = path.read_text()
    assert fw.reference.journal in text and str(fw.reference.year) in text
    from_cif = Structure.from_file(path)
    assert len(from_cif) == len(built[fw.id])
    assert StructureMatcher(primitive_cell=False, scale=False).fit(from_cif, built[fw.id])


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_space_group_is_the_declared_one(fw: Framework, built):
    assert SpacegroupAnalyzer(built[fw.id], symprec=0.1).get_space_group_number() == fw.space_group_number


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_density_is_the_declared_one(fw: Framework, built):
    assert built[fw.id].density == pytest.approx(fw.density, rel=0.03)


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_metal_oxygen_bonds_in_range(fw: Framework, built):
    s = built[fw.id]
    metals = {sp.symbol for sp in s.composition} - {"O"}
    assert metals == set(fw.bonds), "every cation needs a declared bond range"
    for i, site in enumerate(s):
        rng = fw.bonds.get(site.specie.symbol)
        if rng is None:
            continue
        nn = sorted(n.nn_distance for n in s.get_neighbors(site, 3.5) if n.specie.symbol == "O")
        assert len(nn) >= rng.cn, f"{site.specie}{i}: {len(nn)} O within 3.5 A"
        nearest = nn[: rng.cn]
        assert rng.min <= nearest[0] and nearest[-1] <= rng.max, (
            f"{fw.id} {site.specie}{i}: {rng.cn} nearest O at {np.round(nearest, 3)} outside {rng.min}-{rng.max} A")


@pytest.mark.parametrize("fw", FRAMEWORKS, ids=IDS)
def test_no_close_contacts(fw: Framework, built):
    s = built[fw.id]
    distances = s.distance_matrix + np.eye(len(s)) * 100
    assert distances.min() > 1.5
    # cation-cation and O-O contacts well above bonding distances as well
    for i, j in zip(*np.nonzero(distances < 2.3), strict=True):
        assert {s[i].specie.symbol, s[j].specie.symbol} != {"O"}, f"O-O {distances[i, j]:.2f} A"
        assert "O" in {s[i].specie.symbol, s[j].specie.symbol}, f"cation-cation {distances[i, j]:.2f} A"


def test_lookup_by_id():
    fw = get_framework("anatase_TiO2")
    assert fw.space_group_symbol == "I4_1/amd" and fw.channel_axis is None
    assert framework_path("anatase_TiO2").name == "anatase_TiO2.cif"
    with pytest.raises(KeyError):
        get_framework("no-such-framework")


def test_selection_by_id_and_by_group():
    tunnel = select_frameworks(["tunnel"])
    assert [fw.role for fw in tunnel] == ["host"] * len(tunnel) and len(tunnel) == 9
    assert [fw.id for fw in select_frameworks(["rutile_TiO2", "tunnel", "hollandite_alpha-MnO2"])] == \
        [fw.id for fw in load_frameworks() if fw.role == "host" or fw.id == "rutile_TiO2"]  # file order, each once
    assert len(select_frameworks(["all"])) == len(load_frameworks())
    with pytest.raises(KeyError, match="groups: tunnel, all"):
        select_frameworks(["nope"])
