"""ML insertion voltage, capacity and the competing conversion of Mg, Zn, Ca and Al in tunnel frameworks.

    PYTHONPATH=. python bench/insertion.py [--framework hollandite_alpha-MnO2] [--ions Mg,Zn,Ca,Al] [--all]
                                           [--steps 200] [--threads 1] [--data ../shared/data]

The reference CIFs (shared/data/tunnel_references) and the named frameworks of the shipped library go through the
real stages in a fresh embedded database: validate, relax (CHGNet), tunnels, then insertion with the default caps.
The shipped MP reference set, cut to the frameworks' elements and the ions, is the hull the discharged states and
the conversion reactions are judged against. Without --all an ion is inserted only where the tunnels stage found
its channel open; with --all it is tried everywhere. --threads sets torch's threads: on a shared 2-core machine one
thread per process is several times faster.
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
from registry.db.known import load_reference_set
from registry.db.server import EmbeddedServer
from registry.io.ingest import Ingestor
from registry.io.readers import read_cif
from registry.io.records import Record
from registry.science.frameworks import select_frameworks
from registry.science.insertion import InsertionSettings
from registry.science.references import read_table, shipped_set
from schemas.structure import Origin


def _frameworks(data: Path, names: list[str]) -> list[Record]:
    records = [r for cif in sorted((data / "tunnel_references").glob("*.cif")) for r in read_cif(cif)]
    return records + [Record(Origin(kind="mined", source="framework-library", source_id=fw.id), fw.structure())
                      for fw in select_frameworks(names)]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--framework", action="append", help="library framework id or group (default: hollandite)")
    parser.add_argument("--ions", default="Mg,Zn,Ca,Al")
    parser.add_argument("--all", action="store_true", help="insert every ion in every framework")
    parser.add_argument("--steps", type=int, default=InsertionSettings().steps)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    ions = [i.strip() for i in args.ions.split(",") if i.strip()]
    frameworks = _frameworks(args.data, args.framework or ["hollandite_alpha-MnO2"])
    ids = [r.origin.registry_id() for r in frameworks]
    names = {r.origin.registry_id(): r.origin.source_id.split("_")[0] for r in frameworks}
    elements = sorted({el.symbol for r in frameworks for el in r.structure.composition} | set(ions))
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "bench")
            load_reference_set(reg, shipped_set(), read_table(elements=elements), elements)
            Ingestor(reg).write(frameworks)
            options = BuildOptions(scope={"members": {"$in": ids}}, exhaustive=True, ions=tuple(ions))
            for stage in ("validate", "relax", "tunnels"):
                run_builder(make_builder(reg, stage, options), stage, progress=False)
            builder = InsertionBuilder(reg.store("tunnels"), reg.store("relaxed"), *_known(reg),
                                       reg.store("insertion"), ions=ions, only_admitted=not args.all,
                                       query={"registry_id": {"$in": ids}},
                                       settings=InsertionSettings(steps=args.steps))
            start = time.perf_counter()
            report = run_builder(builder, "insertion", progress=False)
            stage_s = time.perf_counter() - start
            docs = reg.find({"registry_id": {"$in": ids}}, collection="insertion")
            tunnels = {d["registry_id"]: d for d in reg.find(collection="tunnels")}
        finally:
            server.stop()

    table = Table(title="ML insertion (CHGNet) against the MP reference set, and the competing conversion")
    for column in ("framework", "ion", "sites tried (found)", "relaxed (conv.)", "avg V", "mAh/g", "max dV",
                   "E_hull chg/dis", "conversion V (intercal. V, same scale)", "wall s", "note"):
        table.add_column(column)
    for rid in ids:
        doc = next((d for d in docs if d["registry_id"] == rid), {"ions": {}, "skipped_ions": {}})
        channels = tunnels.get(rid, {})
        for ion in ions:
            r = doc["ions"].get(ion)
            if r is None:
                admits, dim = ((channels.get(k) or {}).get(ion) for k in ("admits", "dimensionality"))
                why = doc["skipped_ions"].get(ion) or f"channel closed (admits {admits}, dimension {dim})"
                table.add_row(names[rid], ion, *["-"] * 8, why)
                continue
            e = r.get("electrode") or {}
            c = r.get("conversion") or {}
            conversion = (f"{c['voltage']:.2f} ({c['intercalation_voltage']:.2f})"
                          + (" preferred" if c["preferred"] else "")) if c else "-"
            table.add_row(
                names[rid], ion, f"{len(r['sites'])} ({r['sites_found']})",
                f"{len(r['relaxations'])} ({sum(x['status'] == 'converged' for x in r['relaxations'])})",
                _fmt(e.get("average_voltage"), ".2f"), _fmt(e.get("capacity_grav"), ".0f"),
                _fmt(e.get("max_delta_volume"), ".3f"),
                f"{_fmt(e.get('stability_charge'), '.3f')}/{_fmt(e.get('stability_discharge'), '.3f')}",
                conversion, f"{r['wall_s']:.0f}",
                r["error"] or (c.get("reaction") or f"{e.get('formula_charge')} -> {e.get('formula_discharge')}"))
    console = Console(width=220)
    console.print(table)
    console.print(f"insertion stage: {report.processed} frameworks, {report.failed} failed, {stage_s:.0f} s "
                  f"(torch threads {args.threads}, steps {args.steps})")


if __name__ == "__main__":
    main()
