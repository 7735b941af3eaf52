"""Conversion against intercalation: whether the working ion would rather break the host into known compounds than
enter its channels.

For an insertion path from the empty host H (charged) to H + x M (discharged, x ions per host formula unit), the
competing conversion is the reaction H + x M -> the phases of the reference hull at that composition (the hull of
the known compounds of the chemical system, the host itself added, so a partial conversion that keeps some host is
found too). Both reactions are judged on one energy scale, formation energies from the MP elemental references,
on which the metal M is 0:

    V_conversion    = -[G_hull(H + x M) - G(H)] / (z x)
    V_intercalation = -[G(H M_x) - G(H)] / (z x)

with z the ion's charge. Conversion is preferred when it gives the higher voltage, which is the same as the
discharged state lying above that hull: the ions would go into the conversion products first. A hull without any
compound the host and the ion can form (no reference set loaded) has no conversion: voltage 0, reaction None. V_intercalation here
differs from the electrode's `average_voltage` only by the anode: the electrode uses the metal relaxed with the
potential, this scale MP's elemental reference (CHGNet's Mg is within a few meV/atom of it).

The host and its discharged state carry the potential's energies, the products MP's: the CHGNet-MP offset on
oxides (MAE 0.025 eV/atom, docs/stability.md) moves V_conversion by about (atoms of H + x M) x 0.025 / (z x) V,
~0.1 V for Mg0.5FeOOH.

pymatgen's `ConversionElectrode.from_composition_and_pd` builds the same reaction from the hull's element
profile, but needs a structure on every entry (it computes volumes; the reference set has compositions only) and
starts from the hull phases at the host's composition, so a metastable host's own energy would be lost. The
reaction and its voltage are therefore taken from the same `PhaseDiagram` directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.analysis.reaction_calculator import BalancedReaction
from pymatgen.core import Composition

from registry.science.hull import ReferenceHull, reference_entry
from schemas.insertion import ConversionReaction

TOLERANCE = 1e-3  # V: a conversion within this of intercalation is not preferred (round-off of the hull)


def conversion(host: Composition, host_formation: float, discharged: Composition, discharged_formation: float,
               ion: str, charge: int, references: Sequence[PDEntry]) -> ConversionReaction:
    """The conversion reaction of `host` with the ions of `discharged`, and both voltages (V vs the metal).

    host_formation, discharged_formation: formation energies per atom (eV) on the MP elemental references.
    references: the known compounds of the chemical system as formation-energy PDEntries. Raises ValueError when
    the discharged state holds no more ions than the host, or its framework is not the host's.
    """
    unit = host.reduced_composition
    per_unit = host.num_atoms / unit.num_atoms
    x = (discharged[ion] - host[ion]) / per_unit
    if x <= 0:
        raise ValueError(f"{discharged.reduced_formula} holds no more {ion} than {host.reduced_formula}")
    if (discharged - Composition({ion: discharged[ion] - host[ion]})).reduced_composition != unit:
        raise ValueError(f"{discharged.reduced_formula} is not {host.reduced_formula} with {ion} added")
    chemsys = "-".join(sorted({el.symbol for el in discharged.elements}))
    hull = ReferenceHull(chemsys, references).with_entries([reference_entry(unit.formula, host_formation, "host")])
    target = unit + Composition({ion: x})
    products = hull.get_decomposition(target)
    e_host = host_formation * unit.num_atoms
    e_converted = hull.get_hull_energy_per_atom(target) * target.num_atoms
    e_intercalated = discharged_formation * target.num_atoms
    coefficients = {entry.composition.reduced_composition: fraction * target.num_atoms
                    / entry.composition.reduced_composition.num_atoms
                    for entry, fraction in sorted(products.items(), key=lambda p: p[0].composition.reduced_formula)}
    # a partial conversion leaves some of the host's composition (the host, or a more stable polymorph of it): that
    # part is no reactant in the written reaction; the voltage counts the polymorph's energy all the same
    kept = coefficients.pop(unit, 0.0)
    metal = coefficients.pop(Composition(ion).reduced_composition, 0.0)  # ions that react with nothing
    reaction = BalancedReaction({unit: 1.0 - kept, Composition(ion): x - metal}, coefficients) if coefficients else None
    v_conversion = -(e_converted - e_host) / (charge * x)
    v_intercalation = -(e_intercalated - e_host) / (charge * x)
    return ConversionReaction(
        reaction=str(reaction) if reaction else None, ions=round(x, 6), voltage=round(v_conversion, 4) + 0.0,
        intercalation_voltage=round(v_intercalation, 4),
        preferred=reaction is not None and v_conversion > v_intercalation + TOLERANCE,
        products=sorted(str(e.attribute or e.composition.reduced_formula) for e in products))
