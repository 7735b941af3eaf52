"""How well the ML values agree with DFT: regression errors per quantity and the stability classification as
Matbench Discovery defines it (stable when E_hull <= threshold, the same rule for the prediction and the truth;
DFT is the truth). Reads `dft_comparison` documents, written by the DFT builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from registry.science.criteria import get_preset

if TYPE_CHECKING:
    from registry.db.client import Registry

QUANTITIES = ("formation_energy_per_atom", "e_above_hull", "band_gap")
MATBENCH_THRESHOLD = 0.0  # Matbench Discovery: stable iff E_hull <= 0

Pair = tuple[float, float, str]  # (ML, DFT, registry_id)


@dataclass(frozen=True)
class Regression:
    n: int
    mae: float | None
    rmse: float | None
    r2: float | None  # None when the DFT values do not vary (or n < 2)


@dataclass(frozen=True)
class Classification:
    threshold: float
    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float | None  # None when undefined (no positive prediction)
    recall: float | None
    f1: float | None
    accuracy: float | None


@dataclass(frozen=True)
class ParityReport:
    n_comparisons: int
    n_validated: int
    regression: dict[str, Regression]
    classification: Classification


def regression(pairs: list[Pair]) -> Regression:
    if not pairs:
        return Regression(0, None, None, None)
    ml, dft = (np.array([p[i] for p in pairs], dtype=float) for i in (0, 1))
    err = ml - dft
    ss_tot = float(np.sum((dft - dft.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if len(pairs) > 1 and ss_tot > 0 else None
    return Regression(len(pairs), float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2))), r2)


def classification(pairs: list[Pair], threshold: float = MATBENCH_THRESHOLD) -> Classification:
    tp = fp = tn = fn = 0
    for ml, dft, _ in pairs:
        predicted, actual = ml <= threshold, dft <= threshold
        tp += predicted and actual
        fp += predicted and not actual
        tn += not predicted and not actual
        fn += not predicted and actual
    n = len(pairs)
    return Classification(
        threshold=threshold, n=n, tp=tp, fp=fp, tn=tn, fn=fn,
        precision=tp / (tp + fp) if tp + fp else None, recall=tp / (tp + fn) if tp + fn else None,
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None, accuracy=(tp + tn) / n if n else None,
    )


def stability_threshold(preset: str | None) -> float:
    """Matbench's 0 without a preset; otherwise the preset's own E_hull threshold (0.1 eV/atom for tunnel)."""
    if preset is None:
        return MATBENCH_THRESHOLD
    criterion = next((c for c in get_preset(preset).criteria if c.field == "e_above_hull"), None)
    if criterion is None:
        raise ValueError(f"preset {preset!r} has no e_above_hull criterion")
    return float(criterion.threshold)


def _scope(registry: Registry, preset: str | None, ion: str | None) -> dict[str, Any]:
    """Successful comparisons, restricted to the candidates of a preset and ion when given."""
    query: dict[str, Any] = {"state": "successful"}
    wanted = {k: v for k, v in (("preset", preset), ("ion", ion)) if v}
    if wanted:
        query["registry_id"] = {"$in": registry.collection("candidates").distinct("registry_id", wanted)}
    return query


def parity_pairs(registry: Registry, preset: str | None = None, ion: str | None = None) -> dict[str, list[Pair]]:
    """quantity -> [(ML, DFT, registry_id)] for every comparison where both values exist: parity-plot input."""
    docs = registry.find(_scope(registry, preset, ion), collection="dft_comparison",
                         fields=["registry_id", "ml", "dft"], sort=[("registry_id", 1)])
    pairs: dict[str, list[Pair]] = {q: [] for q in QUANTITIES}
    for doc in docs:
        ml, dft = doc.get("ml") or {}, doc.get("dft") or {}
        for q in QUANTITIES:
            if ml.get(q) is not None and dft.get(q) is not None:
                pairs[q].append((float(ml[q]), float(dft[q]), doc["registry_id"]))
    return pairs


def parity_report(registry: Registry, preset: str | None = None, ion: str | None = None,
                  threshold: float | None = None) -> ParityReport:
    """Metrics over the comparisons in scope; the threshold defaults to the preset's (Matbench's 0 without one)."""
    scope = _scope(registry, preset, ion)
    pairs = parity_pairs(registry, preset, ion)
    return ParityReport(
        n_comparisons=registry.count(scope, collection="dft_comparison"),
        n_validated=registry.count({**scope, "dft_validated": True}, collection="dft_comparison"),
        regression={q: regression(p) for q, p in pairs.items()},
        classification=classification(pairs["e_above_hull"],
                                      stability_threshold(preset) if threshold is None else threshold),
    )
