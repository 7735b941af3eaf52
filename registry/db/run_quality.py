"""A generation run's SUN figures (registry/science/sun.py), gathered from what the build decided for its
structures and stored as `quality` on its `generation_runs` document.

A summary, not a stage: `refresh` reads the run's structures and rejects and the validated, relaxed, predicted and
stability documents they map to, and rewrites `quality` only when a figure changed. Whatever calls it (`registry
generate metrics`, the end of `registry build`) may call it again: an unchanged build writes nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymatgen.core import Structure

from registry.errors import RegistryError
from registry.science.benchmarks import e_hull_bias
from registry.science.sun import Sample, relaxation_rmsd, tally
from schemas.base import to_mongo
from schemas.generation import RunQuality

if TYPE_CHECKING:
    from registry.db.client import Registry

SUCCESSFUL = "successful"


def _rmsd(relaxed: dict[str, Any]) -> float | None:
    if relaxed.get("state") != SUCCESSFUL or not relaxed.get("structure"):
        return None
    return relaxation_rmsd(Structure.from_dict(relaxed["input_structure"]), Structure.from_dict(relaxed["structure"]))


def samples(reg: Registry, run_id: str) -> tuple[list[Sample], dict[str, Any]]:
    """What the build decided for each of the run's samples, decided or not, and what it judged them against
    (`tally`'s reference sets, potentials and bias)."""
    ids = sorted(d["registry_id"] for d in reg.find({"origin.run_id": run_id}, fields=["registry_id"]))
    rejects = {d["source_id"] for d in reg.find({"source_id": {"$regex": f"^{re.escape(run_id)}:"}}, "rejects",
                                                ["source_id"])}
    validated = {m: d for d in reg.find_among("members", ids, "validated", ["registry_id", "members", "state",
                                                                          "valid", "checks", "novel", "formula_known"])
                 for m in d.get("members", [])}
    compared = sorted({d["registry_id"] for d in validated.values() if d["state"] == SUCCESSFUL and d.get("valid")})

    def by_id(collection: str, fields: list[str], scope: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        return {d["registry_id"]: d for d in reg.find_among("registry_id", compared, collection,
                                                            ["registry_id", *fields], scope)}

    relaxed = by_id("relaxed", ["state", "structure", "input_structure", "potential"])
    predict_failed = set(by_id("predicted", [], scope={"state": "failed"}))
    stability = by_id("stability", ["state", "e_above_hull", "reference_sets"])
    rmsd = {rid: _rmsd(d) for rid, d in relaxed.items()}

    out = [Sample(parsed=False) for _ in rejects]
    for rid in ids:
        v = validated.get(rid)
        if v is None:
            out.append(Sample())
            continue
        checks = v.get("checks") or {}
        valid = v["state"] == SUCCESSFUL and bool(checks.get("composition_valid") and checks.get("structure_valid"))
        if v["state"] != SUCCESSFUL or not v.get("valid"):
            out.append(Sample(valid=valid, formula_known=v.get("formula_known")))
            continue
        rep = v["registry_id"]
        r, s = relaxed.get(rep), stability.get(rep)
        failed = (r is not None and r["state"] != SUCCESSFUL) or rep in predict_failed or \
            (s is not None and s["state"] != SUCCESSFUL)
        out.append(Sample(
            valid=valid, cluster=rep, novel=v.get("novel"), formula_known=v.get("formula_known"),
            relaxed=None if r is None else r["state"] == SUCCESSFUL, failed=failed, rmsd=rmsd.get(rep),
            e_above_hull=s["e_above_hull"] if s is not None and s["state"] == SUCCESSFUL else None))

    potentials = {d["potential"]["spec"]: f"{d['potential']['spec']} ({d['potential']['name']} "
                                          f"{d['potential']['version']})"
                  for d in relaxed.values() if d.get("potential")}
    return out, {"reference_sets": sorted({r for d in stability.values() for r in d.get("reference_sets", [])}),
                 "potentials": sorted(potentials.values()), "e_hull_bias": e_hull_bias(sorted(potentials))}


def measure(reg: Registry, run_id: str) -> RunQuality:
    """The run's figures from the database as it is now."""
    found, judged_against = samples(reg, run_id)
    return tally(found, **judged_against)


def refresh(reg: Registry, run_id: str | None = None) -> list[tuple[str, RunQuality, bool]]:
    """Recompute the figures of one run (or of every run) and store those that changed: (run id, figures,
    whether they changed), in the order the runs started."""
    query = {} if run_id is None else {"run_id": run_id}
    runs = reg.find(query, "generation_runs", ["run_id", "quality"], sort=[("started", 1)])
    if run_id is not None and not runs:
        known = [d["run_id"] for d in reg.find({}, "generation_runs", ["run_id"], sort=[("started", 1)])]
        raise RegistryError(f"no generation run {run_id!r}; runs: {', '.join(known) or 'none'}")
    out = []
    for run in runs:
        quality = measure(reg, run["run_id"])
        before = RunQuality.model_validate(run["quality"]) if run.get("quality") else None
        changed = before is None or before.model_dump(exclude={"updated"}) != quality.model_dump(exclude={"updated"})
        if changed:
            reg.collection("generation_runs").update_one(
                {"run_id": run["run_id"]}, {"$set": {"quality": to_mongo(quality), "last_updated": datetime.now(UTC)}})
        else:
            quality = before
        out.append((run["run_id"], quality, changed))
    return out
