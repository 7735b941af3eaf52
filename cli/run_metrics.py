"""A generation run's SUN figures as an 80-column table beside the published MP-20 rows (`registry generate metrics`,
the end of `registry build`, bench/generation_quality.py)."""

from __future__ import annotations

import textwrap

from registry.science.benchmarks import bias_line, comparison, counts_line, published
from schemas.generation import RunQuality

WIDTH = 80
LABEL, RUN, OTHER = 30, 17, 10


def quality_table(title: str, quality: RunQuality) -> str:
    """The figures, each with the counts it rests on, then the denominators, the hull, the potential and its bias."""
    names = list(published())
    lines = [title, f"{'':<{LABEL}}{'this run':<{RUN}}" + "".join(f"{n:>{OTHER}}" for n in names)]
    for label, cell, others in comparison(quality):
        lines.append(f"{label:<{LABEL}}{cell:<{RUN}}" + "".join(f"{o:>{OTHER}}" for o in others))
    hull = ", ".join(quality.reference_sets) or "none yet"
    potential = ", ".join(quality.potentials) or "none yet"
    notes = [counts_line(quality), f"hull: {hull}; relaxed with {potential}; stable: E_hull <= "
             f"{quality.stable_e_hull} eV/atom", bias_line(quality),
             "published: DFT relaxation against the MP2020 hull, every sample of each generator trained on MP-20 "
             "(MatterGen's benchmark, Zeni et al. 2025)"]
    lines += [wrapped for note in notes for wrapped in textwrap.wrap(note, WIDTH, subsequent_indent="  ")]
    return "\n".join(lines)


def summary_line(run_id: str, quality: RunQuality) -> str:
    """One line for the end of a build."""
    q = quality
    stable = "-" if q.stable is None else f"{q.stable:.3f}"
    sun = "-" if q.sun is None else f"{q.sun:.3f}"
    return (f"generation run {run_id}: stable {stable}, SUN {sun} of {q.n_samples} samples "
            f"({q.n_evaluated} with an E_hull, {q.n_pending} pending); registry generate metrics {run_id}")
