"""Transparent ranking: named criteria, each with its value, threshold and verdict stored in the candidate.

A criterion reads one field of the joined stage documents. Hard criteria must pass for a candidate to pass;
every criterion adds `weight * s` to the score, where `s` in [0, 1] is 1 for a pass of a yes/no test and, for a
numeric test with a `scale`, a linear ramp of the margin: s = clip(0.5 + margin / (2 * scale), 0, 1), so a value
exactly at the threshold scores 0.5 (for `between`, the margin to the nearer bound). The score orders candidates;
the verdicts explain them. A missing value fails its criterion with a note: a soft criterion then only orders the
candidates that have the value, a hard one fails the candidate. The tunnel preset's one hard criterion on the
insertion stage (a positive insertion voltage) therefore fails every candidate without an insertion result (the
stage not run, or failed: no reducible transition metal, no open site, nothing relaxed): a host is one shown to
take the ion.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydash import get

from schemas.candidate import Verdict

# d-block transition metals; the paper's own screen names a subset (PAPER_TMS).
TRANSITION_METALS = ("Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Y", "Zr", "Nb", "Mo", "Tc", "Ru",
                     "Rh", "Pd", "Ag", "Cd", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg")
PAPER_TMS = ("Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu")
# validated-document flags a hard criterion may test, so the prefilter can apply it before any relaxation
PREFILTER_FLAGS = ("novel", "unique", "formula_known")
# energies the static screen estimates before relaxation (as static_<field> in `screened`)
SCREENED_FIELDS = ("e_above_hull", "formation_energy_per_atom")
WORKING_IONS = ("Mg", "Zn", "Ca", "Al")
# Average voltage (V vs the metal) worth having, per ion: above ~1 V (0.5 V for Al, whose oxide hosts sit near 1 V)
# and under the anodic limit of a usual electrolyte: ~3.5 V for Mg glyme electrolytes, ~2 V for aqueous Zn (oxygen
# evolution), ~4 V for Ca[B(hfip)4]2 in DME, ~2.5 V for AlCl3-[EMIm]Cl. Rough: edit them for your electrolyte.
VOLTAGE_WINDOWS = {"Mg": (1.0, 3.5), "Zn": (0.8, 2.0), "Ca": (1.0, 4.0), "Al": (0.5, 2.5)}

Op = Literal["<", "<=", ">", ">=", "==", "between", "any_of", "all_of", "none_of"]
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
            "between": lambda value, bounds: bounds[0] <= value <= bounds[1]}


class Criterion(BaseModel):
    name: str
    field: str = Field(description="Dotted path in the joined record; '{ion}' is replaced by the working ion")
    op: Op
    threshold: Any = Field(description="A value, [low, high] for `between`, or a mapping working ion -> either")
    hard: bool = True
    weight: float = 1.0
    scale: float | None = Field(None, description="Numeric margin that moves the score from 0.5 to 1 (or 0)")
    description: str = ""


def _margin(op: str, value: float, threshold: Any) -> float:
    """How far inside the limit a value is (negative: outside)."""
    if op == "between":
        return min(value - threshold[0], threshold[1] - value)
    return (threshold - value) if op in ("<", "<=") else (value - threshold)


def evaluate(criterion: Criterion, record: Mapping[str, Any], ion: str) -> Verdict:
    field = criterion.field.replace("{ion}", ion)
    value = get(record, field)
    threshold = criterion.threshold.get(ion) if isinstance(criterion.threshold, Mapping) else criterion.threshold
    note = None
    score = 0.0
    if value is None or (isinstance(value, float) and math.isnan(value)):
        passed, note = False, f"no value for {field} (stage not run or failed)"
    elif threshold is None:
        passed, note = False, f"no threshold for {ion}"
    elif criterion.op in _COMPARE:
        passed = bool(_COMPARE[criterion.op](value, threshold))
        if criterion.scale and isinstance(value, int | float) and not isinstance(value, bool):
            score = min(1.0, max(0.0, 0.5 + _margin(criterion.op, value, threshold) / (2 * criterion.scale)))
        else:
            score = float(passed)
    else:
        values = set(value if isinstance(value, list) else [value])
        wanted = set(threshold)
        passed = {"any_of": bool(values & wanted), "all_of": wanted <= values,
                  "none_of": not values & wanted}[criterion.op]
        score = float(passed)
    return Verdict(name=criterion.name, field=field, value=value, op=criterion.op, threshold=threshold,
                   hard=criterion.hard, weight=criterion.weight, passed=passed, score=criterion.weight * score,
                   note=note)


class Preset(BaseModel):
    name: str
    description: str
    criteria: list[Criterion]

    def prefilter(self) -> dict[str, Any]:
        """A Mongo filter on validated documents from the hard criteria they can already decide (elements,
        novelty, a known formula): the funnel's cheap first cut, so nothing is relaxed that cannot pass."""
        clauses: list[dict[str, Any]] = []
        for c in self.criteria:
            if not c.hard:
                continue
            if c.field == "elements" and c.op in ("all_of", "any_of", "none_of"):
                op = {"all_of": "$all", "any_of": "$in", "none_of": "$nin"}[c.op]
                clauses.append({"elements": {op: list(c.threshold)}})
            elif c.field in PREFILTER_FLAGS and c.op == "==":
                clauses.append({c.field: c.threshold})
        return {"$and": clauses} if clauses else {}

    def screen_limits(self, margin: float) -> dict[str, float]:
        """The static screen's cut-offs: each energy limit of the preset loosened by `margin`, how far relaxation
        may still bring a structure down (`builders/screen.py`). Empty: the preset has nothing to screen on."""
        return {f"static_{f}": t + margin for f in SCREENED_FIELDS if (t := self.threshold(f)) is not None}

    def channel_limit(self, ion: str, channel_margin: float) -> float | None:
        """The static screen's free-sphere cut-off (Å): the ion's calibrated least free sphere less `channel_margin`,
        how far relaxation may still open the framework. None: no hard criterion needs the channel to admit the ion."""
        from registry.science.channels import ion_limits

        needs = any(c.hard and c.field == "admits.{ion}" and c.threshold is True for c in self.criteria)
        return round(ion_limits(ion).min_free_sphere - channel_margin, 4) if needs else None

    def threshold(self, field: str) -> float | None:
        """The limit of the hard criterion reading `field` (e.g. e_above_hull), if the preset has one."""
        return next((float(c.threshold) for c in self.criteria if c.field == field and c.hard
                     and c.op in ("<", "<=")), None)

    def digest(self) -> str:
        """Changes when any criterion changes, so candidates ranked under old criteria are redone."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


PRESETS: dict[str, Preset] = {
    "tunnel": Preset(
        name="tunnel",
        description="Open-tunnel transition-metal oxide hosts for the working ion (the registry's default)",
        criteria=[
            Criterion(name="oxide", field="elements", op="all_of", threshold=["O"], description="contains oxygen"),
            Criterion(name="transition_metal", field="elements", op="any_of", threshold=list(TRANSITION_METALS),
                      description="contains a d-block transition metal"),
            Criterion(name="e_above_hull", field="e_above_hull", op="<=", threshold=0.1, scale=0.1, weight=2.0,
                      description="E_hull <= 0.1 eV/atom against known compounds"),
            Criterion(name="reference_hull", field="hull_complete", op="==", threshold=True,
                      description="E_hull against a loaded reference set that covers every element"),
            Criterion(name="relaxation_sane", field="relaxation_sane", op="==", threshold=True,
                      description="the relaxation kept the input's structure: volume within 20%, still matched"),
            Criterion(name="one_d_channel", field="dimensionality.{ion}", op="==", threshold=1,
                      description="the working ion's open paths form a 1-D channel (a tunnel), not a 2-D or 3-D "
                                  "network (anatase) and not none"),
            Criterion(name="admits_ion", field="admits.{ion}", op="==", threshold=True, weight=2.0,
                      description="the channel admits the working ion (calibrated free sphere and BVSE barrier)"),
            Criterion(name="band_gap", field="band_gap", op="<=", threshold=1.0, scale=1.0, hard=False,
                      description="soft: a small gap helps electronic conduction"),
            Criterion(name="novel", field="novel", op="==", threshold=True, description="no known structure matches"),
            Criterion(name="converged", field="converged", op="==", threshold=True, hard=False, weight=0.5,
                      description="soft: the relaxation converged"),
            Criterion(name="insertion_voltage", field="average_voltage.{ion}", op=">", threshold=0.0,
                      description="the ML insertion voltage is positive: the host takes the ion at all (a candidate "
                                  "without an insertion result fails)"),
            Criterion(name="voltage", field="average_voltage.{ion}", op="between", threshold=VOLTAGE_WINDOWS,
                      scale=0.5, hard=False,
                      description="soft: ML average insertion voltage (V vs the metal) inside the ion's window"),
            Criterion(name="no_conversion", field="conversion_preferred.{ion}", op="==", threshold=False,
                      hard=False, description="soft: conversion against the reference hull does not give a higher "
                                              "voltage than intercalation (else the host would convert)"),
            Criterion(name="capacity", field="capacity_grav.{ion}", op=">=", threshold=100.0, scale=100.0, hard=False,
                      description="soft: ML gravimetric capacity >= 100 mAh/g of the discharged state"),
            Criterion(name="volume_change", field="max_delta_volume.{ion}", op="<=", threshold=0.1, scale=0.1,
                      hard=False, description="soft: the lattice swells by at most 10% on insertion"),
        ],
    ),
    "paper": Preset(
        name="paper",
        description="Datta et al. (arXiv:2410.06433) screen: E_f < -1.5, E_hull < 0.08 eV/atom, E_g <= 0.5 eV, "
                    "a transition metal among Ti..Cu, formula unknown to Materials Project",
        criteria=[
            Criterion(name="formation_energy", field="formation_energy_per_atom", op="<", threshold=-1.5, scale=0.5),
            Criterion(name="e_above_hull", field="e_above_hull", op="<", threshold=0.08, scale=0.08),
            Criterion(name="reference_hull", field="hull_complete", op="==", threshold=True,
                      description="E_hull against a loaded reference set that covers every element"),
            Criterion(name="band_gap", field="band_gap", op="<=", threshold=0.5, scale=0.5),
            Criterion(name="transition_metal", field="elements", op="any_of", threshold=list(PAPER_TMS)),
            Criterion(name="new_formula", field="formula_known", op="==", threshold=False,
                      description="the authors drop formulas Materials Project already has (judged against the "
                                  "loaded reference sets' compositions and the mined structures)"),
        ],
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def judge(preset: Preset, record: Mapping[str, Any], ion: str) -> tuple[list[Verdict], bool, float]:
    """Every verdict, whether all hard criteria passed, and the score."""
    verdicts = [evaluate(c, record, ion) for c in preset.criteria]
    passed = all(v.passed for v in verdicts if v.hard)
    return verdicts, passed, round(sum(v.score for v in verdicts), 6)
