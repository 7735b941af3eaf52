"""ML insertion voltage and capacity of Mg, Zn, Ca and Al in the reference tunnel frameworks.

    PYTHONPATH=. python bench/insertion.py [--all] [--steps 200] [--threads 1] [--data /work/shared/data]

The reference CIFs (shared/data/tunnel_references) go through the real stages in a fresh embedded database:
validate, relax (CHGNet), tunnels, then insertion with the default caps. The MP-20 sample's compounds in the
frameworks' chemical systems with the ions are ingested as known compounds, the hull's references. Without --all
an ion is inserted only where the tunnels stage found its channel open; with --all it is tried everywhere.
--threads sets torch's threads: on a shared 2-core machine one thread per process is several times faster.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from builders.chain import BuildOptions, _known, make_builder
from builders.insertion import InsertionBuilder
from builders.run import run_builder
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.io.ingest import Ingestor
from registry.io.readers import read_cif, read_csv
from registry.science.insertion import InsertionSettings

IONS = ("Mg", "Zn", "Ca", "Al")


def _records(data: Path) -> tuple[list, list]:
    frameworks = [r for cif in sorted((data / "tunnel_references").glob("*.cif")) for r in read_cif(cif)]
    systems = [{el.symbol for el in r.structure.composition} | {ion} for r in frameworks for ion in IONS]
    references = [r for csv in sorted((data / "mp20_sample").glob("*.csv")) for r in read_csv(csv)
                  if r.structure is not None and "formation_energy_per_atom" in r.reference
                  and any({el.symbol for el in r.structure.composition} <= s for s in systems)]
    return frameworks, references


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--all", action="store_true", help="insert every ion in every framework")
    parser.add_argument("--steps", type=int, default=InsertionSettings().steps)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    frameworks, references = _records(args.data)
    ids = [r.origin.registry_id() for r in frameworks]
    names = {r.origin.registry_id(): r.origin.source_id.split("_")[0] for r in frameworks}
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "bench")
            Ingestor(reg).write(frameworks + references)
            options = BuildOptions(scope={"members": {"$in": ids}}, exhaustive=True, ions=IONS)
            for stage in ("validate", "relax", "tunnels"):
                run_builder(make_builder(reg, stage, options), stage, progress=False)
            builder = InsertionBuilder(reg.store("tunnels"), reg.store("relaxed"), *_known(reg),
                                       reg.store("insertion"), ions=IONS, only_admitted=not args.all,
                                       query={"registry_id": {"$in": ids}},
                                       settings=InsertionSettings(steps=args.steps))
            start = time.perf_counter()
            report = run_builder(builder, "insertion", progress=False)
            stage_s = time.perf_counter() - start
            docs = reg.find({"registry_id": {"$in": ids}}, collection="insertion")
            tunnels = {d["registry_id"]: d for d in reg.find(collection="tunnels")}
        finally:
            server.stop()

    table = Table(title=f"ML insertion (CHGNet), {len(references)} known compounds as hull references")
    for column in ("framework", "ion", "sites tried (found)", "levels /supercell", "relaxed (conv.)", "avg V", "mAh/g",
                   "Wh/kg", "max dV", "E_hull chg/dis", "wall s", "note"):
        table.add_column(column)
    for rid in ids:
        doc = next((d for d in docs if d["registry_id"] == rid), {"ions": {}, "skipped_ions": {}})
        admits = tunnels.get(rid, {}).get("admits") or {}
        for ion in IONS:
            r = doc["ions"].get(ion)
            if r is None:
                why = doc["skipped_ions"].get(ion) or ("channel closed (tunnels stage)" if not admits.get(ion) else "?")
                table.add_row(names[rid], ion, *["-"] * 9, why)
                continue
            e = r.get("electrode") or {}
            table.add_row(
                names[rid], ion, f"{len(r['sites'])} ({r['sites_found']})",
                ",".join(map(str, r["levels"])) + (f" /{r['supercell']}" if r["supercell"] else ""),
                f"{len(r['relaxations'])} ({sum(x['status'] == 'converged' for x in r['relaxations'])})",
                _fmt(e.get("average_voltage"), ".2f"), _fmt(e.get("capacity_grav"), ".0f"),
                _fmt(e.get("energy_grav"), ".0f"), _fmt(e.get("max_delta_volume"), ".3f"),
                f"{_fmt(e.get('stability_charge'), '.3f')}/{_fmt(e.get('stability_discharge'), '.3f')}",
                f"{r['wall_s']:.0f}", r["error"] or f"{e.get('formula_charge')} -> {e.get('formula_discharge')}")
    console = Console(width=200)
    console.print(table)
    console.print(f"insertion stage: {report.processed} frameworks, {report.failed} failed, {stage_s:.0f} s "
                  f"(torch threads {args.threads}, steps {args.steps})")


if __name__ == "__main__":
    main()
