"""The outside check: the 42 structures that passed the authors' ALIGNN screen (arXiv:2410.06433), through the
registry's own chain (CHGNet relaxation, CHGNet formation energy, the registry's band-gap model, the hull of the
shipped MP-20 sample), side by side with the authors' values.

    python bench/paper_screen.py [--steps 500] [--workers 1] [--out results.json]

Runs in a fresh embedded database in a temporary folder. The authors' values are ALIGNN (JARVIS) predictions:
E_form against JARVIS references, E_hull against JARVIS/MP hulls, and a TBmBJ-trained gap; ours are
CHGNet/MP2020-compatible, MP-hull (sample only) and PBE-trained. The MAE says how far two ML pipelines agree, not
which is right.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from builders.chain import BuildOptions, build
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.io.ingest import Ingestor
from registry.io.readers import iter_input_files, read_path
from schemas.structure import OriginKind

SAMPLE = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample"
PAPER_CSV = SAMPLE / "cdvae" / "filtered_structures_unconditional.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "paper")
            ingest = Ingestor(reg)
            ingest.write(r for p in iter_input_files([SAMPLE / "mp20"]) for r in read_path(p))
            report = ingest.write(read_path(PAPER_CSV, source="gaibm-42", kind=OriginKind.generated))
            t0 = time.perf_counter()
            options = BuildOptions(preset="paper", steps=args.steps, workers=args.workers,
                                   scope={"origin_kind": "generated"})
            stages = build(reg, "all", options, progress=True)
            seconds = time.perf_counter() - t0
            rows = _rows(reg)
        finally:
            server.stop()

    table = Table("formula", "E_form paper", "E_form ours", "E_hull paper", "E_hull ours", "gap paper", "gap ours",
                  "passes paper preset", title=f"the authors' 42 screened structures ({report.ingested} ingested)")
    for r in rows:
        table.add_row(r["formula"], *(_f(r[k]) for k in ("ef_paper", "ef", "eh_paper", "eh", "gap_paper", "gap")),
                      {True: "yes", False: "no", None: "-"}[r["passed"]])
    Console().print(table)
    for key, label in (("ef", "E_form (eV/atom)"), ("eh", "E_hull (eV/atom)"), ("gap", "band gap (eV)")):
        pairs = [(r[key], r[f"{key}_paper"]) for r in rows if r[key] is not None and r[f"{key}_paper"] is not None]
        if pairs:
            mae = statistics.fmean(abs(a - b) for a, b in pairs)
            print(f"MAE {label}: {mae:.3f} over {len(pairs)} structures")
    print(f"pass the paper preset in the registry: {sum(1 for r in rows if r['passed'])} of {len(rows)}")
    print("stage counts: " + ", ".join(f"{s.stage} {s.processed} ({s.failed} failed)" for s in stages)
          + f"; build {seconds:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


def _rows(reg: Registry) -> list[dict]:
    out = []
    for s in reg.find({"origin.source": "gaibm-42"}, fields=["registry_id", "formula_pretty", "reference"],
                      sort=[("formula_pretty", 1)]):
        [v] = reg.find({"members": s["registry_id"]}, collection="validated", fields=["registry_id"]) or [{}]
        rid = v.get("registry_id")
        pred = (reg.find({"registry_id": rid}, collection="predicted") or [{}])[0]
        stab = (reg.find({"registry_id": rid}, collection="stability") or [{}])[0]
        cand = (reg.find({"registry_id": rid, "preset": "paper"}, collection="candidates") or [{}])[0]
        ref = s["reference"]
        out.append({"registry_id": s["registry_id"], "formula": s["formula_pretty"],
                    "ef_paper": ref.get("formation_energy_per_atom"), "ef": pred.get("formation_energy_per_atom"),
                    "eh_paper": ref.get("e_above_hull"), "eh": stab.get("e_above_hull"),
                    "gap_paper": ref.get("band_gap"), "gap": pred.get("band_gap"), "passed": cand.get("passed")})
    return out


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
