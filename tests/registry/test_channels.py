"""Channel analysis on the tunnel references: rutile-type 1x1 tunnels (pyrolusite, rutile), a hollandite-type 2x2
tunnel (akaganeite) and anatase, which has no tunnels of that kind; then the structures it cannot analyse."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bvlain import Lain
from pymatgen.core import Lattice, Species, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from registry.science.channels import MAX_BARRIER, ChannelReport, _Lain, analyze_channels, working_ion

REFERENCES = {
    "pyrolusite": "beta-MnO2_pyrolusite_1x1_mp-510408.cif",
    "akaganeite": "beta-FeOOH_akaganeite_hollandite-type_2x2_mp-1237867.cif",
    "rutile": "Rutile_TiO2_AFLOW-A2B_tP6_136_f_a.cif",
    "anatase": "anatase_TiO2_I4_1-amd.cif",
}


@pytest.fixture(scope="module")
def structures(shared_data) -> dict[str, Structure]:
    return {name: Structure.from_file(shared_data / "tunnel_references" / cif) for name, cif in REFERENCES.items()}


@pytest.fixture(scope="module")
def reports(structures) -> dict[str, ChannelReport]:
    return {name: analyze_channels(structure, ions=("Mg", "Ca")) for name, structure in structures.items()}


def conventional_c(structure: Structure) -> np.ndarray:
    """The conventional (tetragonal) c axis in the structure's own frame: spglib's (a_s b_s c_s) = (a b c) P^-1."""
    p = SpacegroupAnalyzer(structure).get_symmetry_dataset().transformation_matrix
    return (np.linalg.inv(p).T @ structure.lattice.matrix)[2]


def test_2x2_tunnel_is_wider_than_1x1(reports):
    wide, narrow = reports["akaganeite"].zeopp, reports["pyrolusite"].zeopp
    assert wide.df > 3 * narrow.df
    assert wide.di > 3 * narrow.di
    assert narrow.df < 1.0 < 3.0 < wide.df  # Å: a 1x1 tunnel is narrower than any cation, a 2x2 one is not


def test_2x2_tunnel_admits_mg_and_1x1_does_not(reports):
    wide, narrow = reports["akaganeite"].ions, reports["pyrolusite"].ions
    assert wide["Mg"].admits and wide["Mg"].fits and wide["Mg"].e_1d <= MAX_BARRIER
    assert narrow["Mg"].admits is False and narrow["Mg"].fits is False
    # Ca2+ (r = 1.00 Å) fits the 2x2 tunnel, not the 1x1 one
    assert wide["Ca"].fits and not narrow["Ca"].fits


def test_pyrolusite_has_a_1d_channel_along_tetragonal_c(reports, structures):
    report = reports["pyrolusite"]
    mg = report.ions["Mg"]
    assert report.has_1d_channel and mg.dimensionality == 1
    assert mg.e_2d - mg.e_1d > 2.0  # eV: the 1-D path is far below any 2-D one
    c = conventional_c(structures["pyrolusite"])
    assert abs(np.dot(report.channel_axis.cartesian, c / np.linalg.norm(c))) == pytest.approx(1, abs=1e-3)
    # this MP cell is a magnetic supercell doubled along the tunnel: its shortest translation along it is 2c
    assert report.channel_axis.repeat == pytest.approx(2 * np.linalg.norm(c), rel=1e-3)


def test_channel_axis_is_named_in_a_standard_cell_and_found_in_a_primitive_one(reports, structures):
    conventional = SpacegroupAnalyzer(structures["pyrolusite"]).get_conventional_standard_structure()
    assert analyze_channels(conventional, ions=("Mg",)).channel_axis.label == "c"
    # akaganeite comes as a body-centred primitive cell: its tunnel runs along a + b, which is the conventional c
    axis = reports["akaganeite"].channel_axis
    assert axis.label is None and axis.uvw == (1, 1, 0)
    assert axis.repeat == pytest.approx(np.linalg.norm(conventional_c(structures["akaganeite"])), rel=1e-3)


def test_rutile_has_a_1d_channel_and_anatase_none_although_anatase_has_the_larger_free_sphere(reports):
    rutile, anatase = reports["rutile"], reports["anatase"]
    assert anatase.zeopp.df > rutile.zeopp.df  # geometry alone would call anatase the more open one
    assert rutile.has_1d_channel and rutile.channel_axis.label == "c"
    assert anatase.has_1d_channel is False and anatase.channel_axis is None
    # what separates them: Mg2+ percolates along rutile's tunnel only (1-D, far below any 2-D path), while
    # anatase's paths (the corrected structure, O z = 0.208) are the same in every dimension: no 1-D channel
    assert rutile.ions["Mg"].e_1d < 1.0 and rutile.ions["Mg"].dimensionality == 1
    mg = anatase.ions["Mg"]
    assert mg.dimensionality != 1 and mg.e_2d - mg.e_1d < 0.5
    assert not mg.admits


def test_report_round_trips_through_json(reports):
    report = reports["akaganeite"]
    document = json.loads(json.dumps(report.model_dump(mode="json")))
    assert ChannelReport.model_validate(document) == report
    assert [entry["species"] for entry in document["species"]] == ["Fe3+", "H+", "O2-"]
    assert "taken as 0" in document["species"][1]["source"]  # H+ has a negative Shannon radius


def test_working_ion_in_the_structure_is_taken_out_of_its_framework():
    rock_salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    report = analyze_channels(rock_salt, ions=("Mg",))
    mg = report.ions["Mg"]
    assert mg.in_structure and mg.error is None
    assert mg.free_sphere > report.zeopp.df  # the empty O sublattice is more open than MgO itself
    assert mg.e_1d == mg.e_3d  # cubic: no direction is easier, so no 1-D channel
    assert report.has_1d_channel is False


def test_missing_bvse_parameters_are_reported_per_ion():
    wurtzite = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.19, 5.19), ["Ga", "N"],
                                         [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]])
    report = analyze_channels(wurtzite, ions=("Mg", "Zn"))
    assert report.error is None and report.zeopp is not None
    assert report.ions["Mg"].e_3d is not None and report.ions["Mg"].error is None
    zn = report.ions["Zn"]
    assert zn.dimensionality is None and "BVlain has no BVSE parameters for Zn2+" in zn.error and "N3-" in zn.error


@pytest.mark.filterwarnings("ignore:No Pauling electronegativity")
def test_species_outside_the_shannon_table_is_a_zeopp_reason(structures):
    # an argon atom in rutile's tunnel, oxidation states given: Shannon has no argon ion, BVSE ignores a neutral atom
    filled = structures["rutile"].copy()
    filled.append("Ar", [0.5, 0.0, 0.5])
    filled.add_oxidation_state_by_element({"Ti": 4, "O": -2, "Ar": 0})
    report = analyze_channels(filled, ions=("Mg",))
    assert report.oxidation_state_source == "input"
    assert report.zeopp is None and "no Shannon radius for Ar" in report.zeopp_error
    mg = report.ions["Mg"]
    assert mg.e_1d is not None and mg.free_sphere is None and "geometry" in mg.error
    assert report.error is None


@pytest.mark.parametrize(
    ("structure", "reason"),
    [
        (Structure(Lattice.cubic(3.61), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
         "not ionic"),
        (Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0, 0, 0], [0.01, 0, 0]]), "closer than"),
    ],
    ids=["metal", "overlapping atoms"],
)
def test_unanalysable_structure_returns_a_reason(structure, reason):
    report = analyze_channels(structure)
    assert reason in report.error
    assert report.zeopp is None and report.ions == {} and report.has_1d_channel is None


def test_working_ion_names():
    assert working_ion("Mg") == Species("Mg", 2)
    assert working_ion("Al3+") == Species("Al", 3)
    for bad in ("Fe", "Xx", "Mg0+"):
        with pytest.raises(ValueError):
            working_ion(bad)


def test_vectorised_percolation_count_matches_bvlain(structures):
    decorated = structures["rutile"].copy()
    decorated.add_oxidation_state_by_element({"Ti": 4, "O": -2})
    barriers = []
    for calculator in (Lain(verbose=False), _Lain(verbose=False)):
        calculator.read_structure(decorated, oxi_check=False)
        calculator.bvse_distribution(mobile_ion="Mg2+", resolution=0.3, k=50)
        barriers.append(calculator.percolation_barriers())
    assert barriers[0] == barriers[1]
