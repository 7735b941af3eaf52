import numpy as np
import pytest
from pymatgen.core import Composition, Element, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from registry.science.insertion import (
    InsertionError,
    InsertionSettings,
    build_electrode,
    entry_id,
    find_sites,
    insert,
    ion_counts,
    metal_structure,
    place_ions,
    reducible_metals,
)
from registry.science.redox import redox_floors

# Faraday's constant in mAh per mole of electrons: 96485.332 C/mol / 3.6 C/mAh
F_MAH = 96485.33212 / 3.6
AKAGANEITE = "beta-FeOOH_akaganeite_hollandite-type_2x2_mp-1237867.cif"


def state(n_ions: int, ion: str, energy: float, volume: float, e_hull: float = 0.0) -> ComputedStructureEntry:
    """Mn2O4 with n_ions working ions, at a given total energy (eV) and cell volume (Å^3)."""
    species = ["Mn", "Mn", "O", "O", "O", "O"] + [ion] * n_ions
    coords = np.random.default_rng(n_ions).random((len(species), 3))
    structure = Structure(Lattice.cubic(volume ** (1 / 3)), species, coords)
    return ComputedStructureEntry(structure, energy, entry_id=entry_id(n_ions, ion),
                                  data={"material_id": entry_id(n_ions, ion), "decomposition_energy": e_hull})


def test_mg_voltage_and_capacity_by_hand():
    # Mn2O4 + Mg -> MgMn2O4: E = -40 and -47 eV, Mg metal -1.5 eV/atom; Mg2+ carries 2 electrons.
    electrode = build_electrode([state(0, "Mg", -40.0, 64.0), state(1, "Mg", -47.0, 70.4, e_hull=0.05)],
                                ComputedEntry("Mg", -1.5))
    # V = ((E_charged - E_discharged) / n_Mg + E_Mg) / z = ((-40 + 47) / 1 - 1.5) / 2
    assert electrode.average_voltage == pytest.approx(2.75)
    # Per framework formula unit MnO2: 0.5 Mg, 1 electron; mass of the DISCHARGED state Mg0.5MnO2 (99.089 g/mol):
    # 0.5 * 2 * 26801.48 / 99.089 = 270.48 mAh/g (per charged MnO2, 86.937 g/mol, it would be 308.3)
    discharged = Composition("Mg0.5MnO2").weight
    assert float(discharged) == pytest.approx(99.089, abs=1e-3)
    assert electrode.capacity_grav == pytest.approx(0.5 * 2 * F_MAH / discharged)
    assert electrode.capacity_grav == pytest.approx(270.48, abs=0.01)
    assert electrode.energy_grav == pytest.approx(270.48 * 2.75, abs=0.05)  # Wh/kg = mAh/g * V
    assert electrode.max_delta_volume == pytest.approx(0.1)  # 70.4 / 64 - 1
    assert (electrode.stability_charge, electrode.stability_discharge) == (0.0, 0.05)
    assert (electrode.formula_charge, electrode.formula_discharge) == ("MnO2", "MgMn2O4")


def test_al_carries_three_electrons():
    # Mn2O4 + Al -> AlMn2O4: V = ((-40 + 49) / 1 - 3.7) / 3 = 1.7667 V
    electrode = build_electrode([state(0, "Al", -40.0, 64.0), state(1, "Al", -49.0, 66.0)],
                                ComputedEntry("Al", -3.7))
    assert electrode.average_voltage == pytest.approx(5.3 / 3)
    # 0.5 Al per MnO2, 3 electrons each, over the mass of Al0.5MnO2: 0.5 * 3 * 26801.48 / 100.428 = 400.31 mAh/g
    assert electrode.capacity_grav == pytest.approx(0.5 * 3 * F_MAH / float(Composition("Al0.5MnO2").weight))
    assert electrode.capacity_grav == pytest.approx(400.31, abs=0.01)


def test_two_steps_average_by_capacity():
    # Mn2O4 (-40) -> MgMn2O4 (-47) -> Mg2Mn2O4 (-52): steps (7 - 1.5) / 2 = 2.75 V and (5 - 1.5) / 2 = 1.75 V,
    # each carrying one Mg, so the average is 2.25 V; capacity 2 electrons per MnO2 over MgMnO2 = 481.86 mAh/g.
    electrode = build_electrode([state(0, "Mg", -40.0, 64.0), state(1, "Mg", -47.0, 66.0),
                                 state(2, "Mg", -52.0, 68.0)], ComputedEntry("Mg", -1.5))
    assert electrode.num_steps == 2
    assert [p.average_voltage for p in electrode.adj_pairs] == pytest.approx([2.75, 1.75])
    assert electrode.average_voltage == pytest.approx(2.25)
    assert electrode.capacity_grav == pytest.approx(2 * F_MAH / float(Composition("MgMnO2").weight))
    assert electrode.max_delta_volume == pytest.approx(68.0 / 64.0 - 1)


def test_a_path_with_one_state_has_no_electrode():
    with pytest.raises(InsertionError, match="no voltage step"):
        build_electrode([state(0, "Mg", -40.0, 64.0), state(1, "Mg", 10.0, 70.0)], ComputedEntry("Mg", -1.5))


def test_reducible_electrons_come_from_the_oxidation_states():
    mno2 = Structure(Lattice.tetragonal(4.4, 2.87), ["Mn4+", "Mn4+", "O2-", "O2-", "O2-", "O2-"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.3, 0.3, 0], [0.7, 0.7, 0], [0.8, 0.2, 0.5], [0.2, 0.8, 0.5]])
    (mn,) = reducible_metals(mno2)
    assert (mn.element, mn.oxidation_state, mn.floor, mn.electrons) == ("Mn", 4, 2, 4)  # Mn4+ -> Mn2+, 2 sites
    zno = Structure(Lattice.cubic(4.3), ["Zn2+", "O2-"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert [m.electrons for m in reducible_metals(zno)] == [0]  # Zn2+ is already at its floor


@pytest.mark.parametrize(("cation", "floor", "electrons"), [
    ("W6+", 4, 2), ("Mo6+", 4, 2), ("V5+", 3, 2), ("Nb5+", 4, 1), ("Ti4+", 3, 1), ("Fe3+", 2, 1),
    ("Sc3+", 3, 0), ("Zr4+", 4, 0), ("Ta5+", 5, 0)])
def test_the_oxide_redox_floor_bounds_the_electrons_of_each_metal(cation, floor, electrons):
    """From registry/data/redox/floors.csv: Sc3+ and Zr4+ do not reduce, W6+ stops at W4+ (not W2+)."""
    oxide = Structure(Lattice.cubic(4.0), [cation, "O2-"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (metal,) = reducible_metals(oxide)
    assert (metal.floor, metal.electrons) == (floor, electrons)


def test_every_transition_metal_of_the_floor_table_has_a_source():
    floors = redox_floors()
    assert {e.symbol for e in Element if e.is_transition_metal and e.Z < 104} <= set(floors)
    assert all(f.source and f.oxides and f.floor >= 1 for f in floors.values())


def test_ion_counts_and_greedy_placement():
    assert ion_counts(4, 2) == [2, 4]
    assert ion_counts(1, 2) == [1]
    assert ion_counts(6, 3) == [2, 4, 6]
    # four positions 1.5 Å apart along a 6 Å channel: at 2.6 Å apart only every other one is free
    lattice = Lattice.tetragonal(10.0, 6.0)
    positions = np.array([[0.5, 0.5, z] for z in (0, 0.25, 0.5, 0.75)])
    orbit = np.array([0, 1, 0, 1])  # orbit 0 (z = 0, 0.5) lies lower than orbit 1
    assert place_ions(lattice, positions, orbit, [0.0, 0.3], 2, 0, 2.6) == [0, 2]
    assert place_ions(lattice, positions, orbit, [0.0, 0.3], 2, 1, 2.6) == [1, 3]
    assert place_ions(lattice, positions, orbit, [0.0, 0.3], 3, 0, 2.6) is None
    assert place_ions(lattice, positions, orbit, [0.0, 0.3], 1, 0, 2.6, occupied=np.array([[0.5, 0.5, 0.1]])) is None


@pytest.mark.parametrize("ion", ["Mg", "Zn", "Al"])
def test_sites_lie_inside_the_hollandite_channel(shared_data, ion):
    # The conventional I4/m cell (a = 10.52, c = 3.09 Å) has its 2x2 channels along c through (0, 0) and (1/2, 1/2).
    host = Structure.from_file(shared_data / "tunnel_references" / AKAGANEITE)
    cell = SpacegroupAnalyzer(host).get_conventional_standard_structure()
    sites, orbits = find_sites(cell, ion)
    assert sites and len(sites) == len(orbits)
    assert [s.bvse_energy for s in sites] == sorted(s.bvse_energy for s in sites) and sites[0].bvse_energy == 0
    best = np.array(sites[0].frac_coords)
    axes = np.array([[0, 0], [0.5, 0.5], [0, 1], [1, 0], [1, 1]])
    to_axis = np.min(np.linalg.norm((best[:2] - axes) * cell.lattice.a, axis=1))
    # inside the channel: nearer its axis than any framework atom, and within its free radius (Zeo++ Df 3.56 Å)
    assert to_axis < sites[0].min_distance and to_axis < 3.56 / 2
    oxygen = [s.frac_coords for s in cell if s.specie.symbol == "O"]
    assert cell.lattice.get_all_distances([best], oxygen).min() >= 1.8
    assert all(s.multiplicity == len(o) for s, o in zip(sites, orbits, strict=True))


def test_a_channel_too_tight_for_the_ion_gives_a_reason(shared_data):
    host = Structure.from_file(shared_data / "tunnel_references" / AKAGANEITE)
    with pytest.raises(InsertionError, match="percolates below 1.5 eV"):
        find_sites(host, "Ca")  # BVSE E_1D of Ca2+ here is ~1.6 eV


def test_metal_references():
    assert metal_structure("Mg").lattice.c == pytest.approx(5.211)
    assert len(metal_structure("Al")) == 1  # fcc, primitive
    with pytest.raises(InsertionError, match="no metal reference"):
        metal_structure("Li")


def test_a_framework_without_reducible_metal_fails_with_a_reason():
    from registry.science.potentials import load_potential

    # SnO2 in the rutile structure: an open 1x1 channel, but no transition metal to reduce
    sno2 = Structure(Lattice.tetragonal(4.74, 3.19), ["Sn", "Sn", "O", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.3, 0.3, 0], [0.7, 0.7, 0], [0.8, 0.2, 0.5], [0.2, 0.8, 0.5]])
    result = insert(sno2, "Mg", load_potential("chgnet"), InsertionSettings())
    assert result.state == "failed" and "no reducible transition metal" in result.error
    assert result.electrode is None and result.ion == "Mg2+"
