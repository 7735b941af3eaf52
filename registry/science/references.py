"""Reference energies: the MP elemental references (the zero of every formation energy in the registry) and the
reference sets of known compounds (Materials Project formation energies by composition) that hulls and novelty are
judged against.

The shipped reference set is Matbench's `matbench_mp_e_form` (MP as retrieved 2019-04-02): one formation energy per
MP entry, by formula, with MP's legacy (pre-MP2020) corrections. The registry's own energies (CHGNet, or SevenNet
after the MP2020 correction) are MP2020-compatible. The two differ most for transition-metal oxides, whose GGA+U
corrections were refitted (Fe: -2.733 -> -2.256 eV per Fe; O: -0.702 -> -0.687 eV per O), i.e. up to +0.25 eV/atom
for FeO. `mp2020_shift` moves an oxide's legacy value to MP2020 with pymatgen's own constants of both schemes.
Measured on the 68 ground-state oxides of the MP-20 sample relaxed with CHGNet (`bench/reference_hull.py`): for the
42 whose only anion is O (H allowed), re-correcting takes the MAE against CHGNet from 0.037 to 0.025 eV/atom and
the median offset from 0.033 to 0.023; for mixed-anion compounds (F, N, Cl with O) it makes them worse (legacy's gas
corrections differ in kind, not by a constant), so they, and every non-oxide, are kept as given.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry

from registry import DATA

DATA = DATA / "references"
ELEMENTAL_REFERENCES = DATA / "2023-02-07-mp-elemental-reference-entries.json.gz"
REFERENCE_NAME = "MP elemental references 2023-02-07 (Matbench Discovery)"
MP_E_FORM = DATA / "mp_e_form.csv.gz"
MP_GAP = DATA / "mp_gap.csv.gz"
# Anions (and gases) whose corrections the two MP schemes treat differently in kind: a composition holding any of
# them besides O keeps its legacy value.
OTHER_ANIONS = frozenset({"N", "F", "Cl", "Br", "I", "S", "Se", "Te"})


@cache
def elemental_entries() -> dict[str, ComputedEntry]:
    """Symbol -> MP's lowest-energy elemental entry (energy per atom MP2020-compatible)."""
    with gzip.open(ELEMENTAL_REFERENCES, "rt") as fh:
        data = json.load(fh)
    return {symbol: ComputedEntry.from_dict(d) for symbol, d in data.items()}


def elemental_energy(symbol: str) -> float:
    """Energy per atom of an element's reference; KeyError names the missing element."""
    entries = elemental_entries()
    if symbol not in entries:
        raise KeyError(f"no MP elemental reference energy for {symbol}")
    return entries[symbol].energy_per_atom


def formation_energy_per_atom(composition: Composition, energy_per_atom: float) -> float:
    """E_form = E - sum_i x_i mu_i, with x_i atomic fractions and mu_i the elemental reference energies."""
    fractions = composition.fractional_composition
    return energy_per_atom - sum(x * elemental_energy(el.symbol) for el, x in fractions.items())


@cache
def _oxide_constants() -> tuple[float, dict[str, float]]:
    """(MP2020 - legacy) correction per O atom of an oxide, and per atom of each GGA+U metal in an oxide: the
    constants as pymatgen's two compatibility schemes hold them."""
    from pymatgen.entries.compatibility import (
        AnionCorrection,
        MaterialsProject2020Compatibility,
        MaterialsProjectCompatibility,
        UCorrection,
    )

    new = MaterialsProject2020Compatibility(check_potcar=False)
    legacy = {type(c): c for c in MaterialsProjectCompatibility().corrections}
    oxygen = new.comp_correction["oxide"] - legacy[AnionCorrection].oxide_correction["oxide"]
    old_u = legacy[UCorrection].u_corrections["O"]
    metals = {el: value - old_u[el] for el, value in new.u_corrections["O"].items()}
    return oxygen, metals


def mp2020_shift(composition: Composition) -> float:
    """eV/atom to add to a legacy-corrected MP formation energy to put it on the MP2020 scale; 0 for anything but
    an oxide whose only anion is O (see the module docstring for why, and what was measured)."""
    symbols = {el.symbol for el in composition.elements}
    if "O" not in symbols or symbols & OTHER_ANIONS:
        return 0.0
    oxygen, metals = _oxide_constants()
    amounts = composition.get_el_amt_dict()
    shift = amounts["O"] * oxygen
    if symbols & set(metals):  # MP ran it GGA+U: both schemes correct every U metal
        shift += sum(amounts[el] * metals[el] for el in symbols & set(metals))
    return shift / composition.num_atoms


@dataclass(frozen=True)
class ReferenceSet:
    """A set of known compounds with formation energies: where it came from and on which energy scale."""

    name: str
    description: str
    origin: str
    licence: str
    energy_scheme: str
    uncertainty: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256


@dataclass
class ReferenceComposition:
    """One composition of a reference set: every entry's formation energy (polymorphs) and PBE band gap."""

    formula_pretty: str
    elements: list[str]
    formation_energies_as_given: list[float] = field(default_factory=list)
    band_gaps: list[float] = field(default_factory=list)
    correction_shift: float = 0.0

    @property
    def chemsys(self) -> str:
        return "-".join(self.elements)

    @property
    def formation_energy_per_atom(self) -> float | None:
        """The lowest entry's formation energy on the registry's (MP2020-compatible) scale."""
        if not self.formation_energies_as_given:
            return None
        return min(self.formation_energies_as_given) + self.correction_shift


@dataclass
class TableRead:
    """A reference table read into compositions, with the rows that could not be used and why."""

    compositions: dict[str, ReferenceComposition]
    rejected: list[tuple[int, str, str]]  # (row, raw text, reason)


SHIPPED_SET = ReferenceSet(
    name="mp-2019.04-matbench",
    description="Materials Project formation energies (132,752 entries, 95,118 compositions) and PBE band gaps "
                "(106,113 entries), by composition: Matbench's matbench_mp_e_form and matbench_mp_gap",
    origin="anthony-wang/CrabNet@b09c762:data/matbench/{mp_e_form,mp_gap}.csv (MP retrieved 2019-04-02; entries "
           "with E_form > 2.5 eV/atom and noble gases removed by Matbench)",
    licence="data: Materials Project, CC BY 4.0 (A. Jain et al., APL Materials 1, 011002 (2013)); "
            "Matbench (A. Dunn et al., npj Comput. Mater. 6, 138 (2020)); CrabNet repository MIT",
    energy_scheme="MP legacy corrections as given, moved to MP2020 with pymatgen's constants for oxides whose only "
                  "anion is O (registry.science.references.mp2020_shift)",
    uncertainty="against CHGNet on the MP-20 sample's 68 ground-state oxides: MAE 0.025 eV/atom (median +0.023) "
                "for the 42 O-only oxides, ~0.05 for the mixed-anion ones (bench/reference_hull.py)",
)


def _rows(path: Path) -> Iterator[tuple[int, str, str]]:
    """(row number, formula, value) of a `formula,target` CSV, plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["formula", "target"]:
            raise ValueError(f"{path.name}: expected a header 'formula,target', found {header!r}")
        for i, row in enumerate(reader, start=2):
            yield i, (row[0] if row else ""), (row[1] if len(row) > 1 else "")


def read_table(e_form: Path = MP_E_FORM, gaps: Path | None = MP_GAP,
               elements: Iterable[str] | None = None, shift: bool = True) -> TableRead:
    """Formation energies (and band gaps) by reduced composition; `elements` keeps only compositions made of them;
    `shift`: the energies carry MP's legacy corrections, to be moved to MP2020 (`mp2020_shift`).

    A row whose formula does not parse or whose value is not a finite number is rejected with the reason; the
    rest are read. A file is parsed once per process (~10 s for the shipped table); subsets are cut from it."""
    full = _read_table(e_form, gaps, shift)
    if not elements:
        return full
    allowed = set(elements)
    return TableRead({k: c for k, c in full.compositions.items() if set(c.elements) <= allowed}, full.rejected)


@cache
def _read_table(e_form: Path, gaps: Path | None, shift: bool) -> TableRead:
    compositions: dict[str, ReferenceComposition] = {}
    rejected: list[tuple[int, str, str]] = []
    parsed: dict[str, tuple[str, list[str]]] = {}

    def composition_of(formula: str) -> tuple[str, list[str]]:
        if formula not in parsed:
            comp = Composition(formula)
            if comp.num_atoms <= 0:
                raise ValueError("empty composition")
            parsed[formula] = (comp.reduced_formula, sorted(el.symbol for el in comp.elements))
        return parsed[formula]

    for path, kind in ((e_form, "e_form"), (gaps, "gap")):
        if path is None:
            continue
        for row, formula, value in _rows(path):
            try:
                pretty, symbols = composition_of(formula)
                number = float(value)
                if not math.isfinite(number):
                    raise ValueError(f"value {value!r} is not finite")
            except Exception as exc:
                rejected.append((row, f"{path.name}:{formula},{value}"[:200], f"{type(exc).__name__}: {exc}"))
                continue
            entry = compositions.get(pretty)
            if entry is None:
                entry = compositions[pretty] = ReferenceComposition(pretty, symbols)
            (entry.formation_energies_as_given if kind == "e_form" else entry.band_gaps).append(number)
    for entry in compositions.values():
        entry.formation_energies_as_given.sort()
        entry.band_gaps.sort()
        if shift and entry.formation_energies_as_given:
            entry.correction_shift = mp2020_shift(Composition(entry.formula_pretty))
    return TableRead(compositions, rejected)


def shipped_set() -> ReferenceSet:
    """The shipped MP table's reference set, with the hashes of its files."""
    from dataclasses import replace

    return replace(SHIPPED_SET, files=files_sha256(MP_E_FORM, MP_GAP))


def files_sha256(*paths: Path | None) -> dict[str, str]:
    """sha256 of each file, by name: what a reference set was read from."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p is not None}


def content_hash(items: Iterable[dict]) -> str:
    """One hash over documents (sorted keys), to tell an unchanged reference set from a changed one."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item, sort_keys=True, default=str).encode())
    return digest.hexdigest()

