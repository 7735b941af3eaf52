"""Conversion against intercalation, by hand: MnO2 + Mg -> MgO + MnO on a hull of three known compounds."""

import pytest
from pymatgen.core import Composition

from registry.science.conversion import conversion
from registry.science.hull import ReferenceHull, reference_entry

# formation energies (eV/atom) on the MP elemental references: the metal Mg is at 0
KNOWN = [reference_entry("MgO", -3.0, "mp:MgO"), reference_entry("MnO", -2.0, "mp:MnO")]
HOST = -1.8  # MnO2: -5.4 eV per formula unit


def test_conversion_voltage_by_hand_and_preferred_over_a_weak_intercalation():
    # conversion: -6.0 - 4.0 + 5.4 = -4.6 eV per Mg, two electrons: 2.3 V
    # intercalation into MgMnO2 at -2.2 eV/atom: -8.8 + 5.4 = -3.4 eV per Mg: 1.7 V
    result = conversion(Composition("Mn2O4"), HOST, Composition("Mg2Mn2O4"), -2.2, "Mg", 2, KNOWN)
    assert result.reaction == "MnO2 + Mg -> MnO + MgO" and result.ions == 1.0
    assert result.voltage == pytest.approx(2.3) and result.intercalation_voltage == pytest.approx(1.7)
    assert result.preferred and result.products == ["mp:MgO", "mp:MnO"]
    # the same verdict as the discharged state's E_hull against the known compounds and the host
    hull = ReferenceHull("Mg-Mn-O", KNOWN).with_entries([reference_entry("MnO2", HOST, "host")])
    assert hull.get_e_above_hull(reference_entry("MgMnO2", -2.2, "discharged"), allow_negative=True) > 0


def test_an_intercalation_below_the_conversion_products_is_not_a_conversion():
    result = conversion(Composition("MnO2"), HOST, Composition("MgMnO2"), -2.6, "Mg", 2, KNOWN)
    assert result.voltage == pytest.approx(2.3) and result.intercalation_voltage == pytest.approx(2.5)
    assert not result.preferred


def test_half_discharged_converts_half_the_host():
    result = conversion(Composition("MnO2"), HOST, Composition("Mg0.5MnO2"), -2.0, "Mg", 2, KNOWN)
    assert result.reaction == "0.5 MnO2 + 0.5 Mg -> 0.5 MnO + 0.5 MgO" and result.ions == 0.5
    assert result.voltage == pytest.approx(2.3)  # the same step: the rest of the host is left as it was
    assert "host" in result.products


def test_a_discharged_state_that_is_not_the_host_with_ions_is_refused():
    with pytest.raises(ValueError, match="holds no more Mg"):
        conversion(Composition("MnO2"), HOST, Composition("MnO2"), -1.8, "Mg", 2, KNOWN)
    with pytest.raises(ValueError, match="is not MnO2 with Mg added"):
        conversion(Composition("MnO2"), HOST, Composition("MgMnO3"), -2.0, "Mg", 2, KNOWN)


def test_without_known_compounds_nothing_converts():
    result = conversion(Composition("MnO2"), HOST, Composition("MgMnO2"), -2.2, "Mg", 2, [])
    assert result.reaction is None and result.voltage == 0.0 and not result.preferred
    assert result.intercalation_voltage == pytest.approx(1.7)
