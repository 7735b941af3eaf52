"""What a run's SUN figures are read beside: the published DFT-evaluated rows of generators trained on MP-20
(MatterGen's benchmark, registry/data/benchmarks/) and the measured bias of the potential's E_hull.

The rows name each figure once, with the count it rests on and MatterGen's name for it, so the terminal table,
the report and the bench cannot disagree on what is compared with what.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from registry import DATA
from schemas.generation import RunQuality

BENCHMARKS = DATA / "benchmarks"
BIAS_FILE = BENCHMARKS / "ehull_bias.json"
PUBLISHED_FILES = {"CDVAE": "cdvae.json", "DiffCSP": "diffcsp_mp_20.json", "MatterGen": "mattergen_mp_20.json"}


@dataclass(frozen=True)
class Figure:
    """One row of the comparison: a `RunQuality` value, the counts it rests on, MatterGen's metric if it has one."""

    label: str
    value: str
    count: str
    of: str | None  # the denominator's field; None: an average over `count` values
    published: str | None

    def run_cell(self, quality: RunQuality) -> str:
        """`0.312 156/500` for a fraction, `0.105 n=430` for an average, `-` when nothing is counted yet."""
        value = getattr(quality, self.value)
        count = getattr(quality, self.count)
        if value is None:
            return "-"
        return f"{value:.3f} {count}/{getattr(quality, self.of)}" if self.of else f"{value:.3f} n={count}"


FIGURES = (
    Figure("stable, of all samples", "stable", "n_stable", "n_samples", "frac_stable_structures"),
    Figure("stable, of those with E_hull", "stable_evaluated", "n_stable", "n_evaluated", None),
    Figure("SUN, of all samples", "sun", "n_sun", "n_samples", "frac_novel_unique_stable_structures"),
    Figure("SUN, by composition", "sun_composition", "n_sun_composition", "n_samples", None),
    Figure("unique", "unique", "n_unique", "n_compared", "frac_unique_structures"),
    Figure("novel structure", "novel", "n_novel", "n_compared", "frac_novel_structures"),
    Figure("novel composition", "novel_composition", "n_novel_composition", "n_validated", None),
    Figure("mean E_hull (eV/atom)", "mean_e_above_hull", "n_evaluated", None, "avg_energy_above_hull_per_atom"),
    Figure("mean RMSD (Å)", "mean_rmsd", "n_rmsd", None, "avg_rmsd_from_relaxation"),
    Figure("valid (SMACT, structure)", "valid", "n_valid", "n_samples", "avg_structure_comp_validity"),
)


@cache
def published() -> dict[str, dict[str, float]]:
    """Generator name -> MatterGen metric name -> value, as published (DFT relaxation, MP2020 hull)."""
    return {name: {k: v["value"] for k, v in json.loads((BENCHMARKS / file).read_text()).items()}
            for name, file in PUBLISHED_FILES.items()}


def comparison(quality: RunQuality) -> list[tuple[str, str, list[str]]]:
    """(label, the run's cell, each published generator's value or `-`) for every figure."""
    rows = []
    for figure in FIGURES:
        others = [f"{row[figure.published]:.3f}" if figure.published in row else "-" for row in published().values()]
        rows.append((figure.label, figure.run_cell(quality), others))
    return rows


def counts_line(quality: RunQuality) -> str:
    """Where the samples went: what each fraction's denominator holds."""
    q = quality
    return (f"{q.n_samples} samples: {q.n_rejected} rejected, {q.n_validated - q.n_compared} failed validation, "
            f"{q.n_compared} compared; relaxed {q.n_relaxed}, failed {q.n_failed} "
            f"({q.n_failed_relaxation} in relaxation), pending {q.n_pending}; "
            f"{q.n_far_below_hull} more than 0.2 eV/atom below the hull")


def bias_line(quality: RunQuality) -> str:
    """The potential's measured E_hull bias, or why there is none."""
    bias = quality.e_hull_bias
    if not bias:
        named = ", ".join(quality.potentials) or "no potential yet"
        return f"E_hull bias: not measured for {named} (bench/generation_quality.py --bias --write)"
    above, ground = bias["above_hull"], bias["ground_states"]
    return (f"E_hull bias of {bias['potential']} against MP ({bias['reference']}): median "
            f"{above['median']:+.3f} eV/atom on {above['n']} compounds above the hull, "
            f"{ground['median']:+.3f} on {ground['n']} on it")


def e_hull_bias(specs: list[str], path: Path = BIAS_FILE) -> dict[str, Any] | None:
    """The measured bias of the potential the run was relaxed with (its spec, e.g. `chgnet`), if it was one."""
    if len(specs) != 1 or not path.exists():
        return None
    return json.loads(path.read_text()).get(specs[0])


def write_e_hull_bias(spec: str, measurement: dict[str, Any], path: Path = BIAS_FILE) -> None:
    """Store a bench's measurement under the potential's spec, keeping the other potentials'."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[spec] = measurement
    path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
