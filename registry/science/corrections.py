"""MP2020 energy corrections for potentials trained on raw (uncorrected) GGA/GGA+U energies, such as SevenNet.

CHGNet was trained on MPtrj's MP2020-corrected energies, so its energies compare with Materials Project's and with
the registry's elemental references directly. SevenNet was trained on the same calculations' raw energies: a
transition-metal oxide comes out about 1 eV/atom above MP's (beta-MnO2: -7.06 against -8.13 eV/atom). Adding
the correction Materials Project itself applies puts such a potential on the same scale, as Matbench Discovery
does for every model trained on uncorrected energies.

The correction needs the calculation's parameters, which for a predicted structure are those MP would have used:
GGA+U with MPRelaxSet's U values when the most electronegative element is O or F and a U metal is present (MP2020
looks up U by that element), GGA otherwise; MPRelaxSet's POTCARs. It depends on the composition and, through
the oxide type (oxide, peroxide, superoxide, ozonide: O-O distances), on the structure; never on the geometry
otherwise, so forces and stresses are left alone.
"""

from __future__ import annotations

import warnings
from functools import cache
from importlib.metadata import version as package_version

from pymatgen.core import Composition, Structure

MP2020_CORRECTION = (f"MaterialsProject2020Compatibility (pymatgen {package_version('pymatgen')}): MPRelaxSet U "
                     "values and POTCARs, oxide type from the structure, oxidation states guessed from the composition")


def mp_parameters(composition: Composition) -> dict:
    """The run parameters MP2020 reads, as Materials Project would have run this composition."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    config = MPRelaxSet.CONFIG
    symbols = sorted(el.symbol for el in composition.elements)
    anion = max(composition.elements, key=lambda el: el.X).symbol
    table = config["INCAR"]["LDAUU"].get(anion, {})
    hubbards = {el: float(table[el]) for el in symbols if table.get(el)}
    missing = [el for el in symbols if el not in config["POTCAR"]]
    if missing:  # MP never ran it: there is no correction to apply
        raise ValueError(f"no MPRelaxSet POTCAR for {', '.join(missing)}: MP2020 cannot correct {composition.reduced_formula}")
    return {"run_type": "GGA+U" if hubbards else "GGA", "is_hubbard": bool(hubbards), "hubbards": hubbards,
            "potcar_symbols": [f"PBE {config['POTCAR'][el]}" for el in symbols]}


def mp2020_correction_per_atom(structure: Structure) -> float:
    """MP2020's correction (eV/atom) to add to a raw GGA/GGA+U energy of `structure`; ValueError if MP2020
    refuses it."""
    from pymatgen.analysis.structure_analyzer import oxide_type

    composition = structure.composition
    kind = oxide_type(structure, 1.05) if "O" in composition else None  # MP2020's own call, relative bond cutoff
    return _per_atom(composition.reduced_formula, kind)


@cache
def _per_atom(formula: str, kind: str | None) -> float:
    from pymatgen.analysis.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry

    composition = Composition(formula)
    entry = ComputedEntry(composition, 0.0, parameters=mp_parameters(composition),
                          data={"oxide_type": kind} if kind else {})
    with warnings.catch_warnings():  # "failed to guess oxidation states": MP2020 then corrects the most electronegative
        warnings.simplefilter("ignore")
        adjustments = MaterialsProject2020Compatibility().get_adjustments(entry)
    return sum(a.value for a in adjustments) / composition.num_atoms
