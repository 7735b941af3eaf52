"""The reference hull checked on Materials Project compounds: the shipped MP-20 sample's oxides through the
registry's own chain (ingest, validate, CHGNet relaxation, formation energy, stability against the MP reference
set), compared with MP's own energy above hull, and which of the sample's formulas the registry knows.

    PYTHONPATH=. python bench/reference_hull.py [--steps 500] [--workers 2]

Runs in a fresh embedded database in a temporary folder; the whole shipped reference set is loaded as `registry
build` loads it. Also prints the measurement behind the energy scheme (registry/science/references.py): CHGNet's formation
energies of the sample's ground-state oxides against the reference table as given (legacy corrections) and moved
to MP2020 (`mp2020_shift`), and the sample's own values against the table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pymatgen.core import Composition
from rich.console import Console
from rich.table import Table

from builders.chain import BuildOptions, build
from registry.db.client import Registry
from registry.db.known import ensure_references
from registry.db.server import EmbeddedServer
from registry.io.ingest import Ingestor
from registry.io.readers import iter_input_files, read_path
from registry.science.references import OTHER_ANIONS, read_table

SAMPLE = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "mp20"


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"{statistics.median(values):+.3f} / {statistics.fmean(abs(v) for v in values):.3f} / "
            f"{sorted(abs(v) for v in values)[int(0.9 * (len(values) - 1))]:.3f}")


def _recorrected(formula: str) -> float:
    """pymatgen's MP2020 minus legacy correction (eV/atom) of a composition-only entry run as MP ran it (GGA+U
    for U metals with O or F): what moving *every* compound to MP2020 would add, mixed anions included."""
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility, MaterialsProjectCompatibility
    from pymatgen.entries.computed_entries import ComputedEntry
    from pymatgen.io.vasp.sets import MPRelaxSet

    comp = Composition(formula)
    config = MPRelaxSet.CONFIG
    symbols = sorted(el.symbol for el in comp.elements)
    anion = "O" if "O" in symbols else "F" if "F" in symbols else None
    hubbards = {el: config["INCAR"]["LDAUU"][anion].get(el, 0) for el in symbols} if anion else {}
    ggau = any(hubbards.values())
    potcars = [f"PBE {config['POTCAR'][el]}" for el in symbols]
    entry = ComputedEntry(comp, 0.0, parameters={
        "run_type": "GGA+U" if ggau else "GGA", "is_hubbard": ggau, "hubbards": hubbards if ggau else {},
        "potcar_symbols": potcars, "potcar_spec": [{"titel": p, "hash": None} for p in potcars]})
    new, old = (scheme.process_entry(entry.copy()) for scheme in (MaterialsProject2020Compatibility(),
                                                                  MaterialsProjectCompatibility()))
    return (new.correction - old.correction) / comp.num_atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    console = Console(width=110)

    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "hull")
            t0 = time.perf_counter()
            Ingestor(reg).write(r for p in iter_input_files([SAMPLE]) for r in read_path(p))
            loaded = ensure_references(reg)
            t_load = time.perf_counter() - t0
            t0 = time.perf_counter()
            options = BuildOptions(scope={"elements": "O"}, exhaustive=True, steps=args.steps, workers=args.workers)
            for stage in ("validate", "relax", "predict", "stability"):
                build(reg, stage, options, progress=False)
            t_build = time.perf_counter() - t0
            mined = {d["registry_id"]: d for d in reg.find({"origin.kind": "mined"},
                                                           fields=["registry_id", "formula_pretty", "reference"])}
            validated = reg.find({}, collection="validated", fields=["formula_pretty", "formula_known", "members"])
            stability = {d["registry_id"]: d for d in reg.find({"state": "successful"}, collection="stability")}
            predicted = {d["registry_id"]: d for d in reg.find({"state": "successful"}, collection="predicted")}
        finally:
            server.stop()

    formulas = {d["formula_pretty"] for d in mined.values()}
    known = {d["formula_pretty"] for d in validated if d.get("formula_known")}
    rows = []
    for rid, s in stability.items():
        ref = mined[rid]["reference"]
        rows.append((mined[rid]["formula_pretty"], ref.get("e_above_hull"), s["e_above_hull"],
                     ref.get("formation_energy_per_atom"), predicted[rid]["formation_energy_per_atom"]))
    ground = [r for r in rows if r[1] == 0]
    table = Table("quantity", "value", title="MP-20 sample oxides relaxed by the registry (CHGNet) against the MP "
                                             "reference set")
    table.add_row("reference set loaded", f"{loaded.compositions if loaded else '?'} compositions in {t_load:.0f} s "
                                          "(with the sample's ingest)")
    table.add_row("sample formulas known (reference set or mined)",
                  f"{len(formulas & known)}/{len(formulas)} ({len(formulas & known) / len(formulas):.1%})")
    table.add_row("sample formulas in the reference set alone",
                  f"{sum(f in read_table().compositions for f in formulas)}/{len(formulas)}")
    table.add_row("oxides relaxed and on a hull", str(len(rows)))
    table.add_row("ground states (MP E_hull 0): E_hull < 0.1 eV/atom",
                  f"{sum(r[2] < 0.1 for r in ground)}/{len(ground)} ({sum(r[2] < 0.1 for r in ground) / len(ground):.1%})")
    table.add_row("ground states: E_hull median / MAE / p90 (eV/atom)", _stats([r[2] for r in ground]))
    table.add_row("all oxides: E_hull - MP E_hull, median / MAE / p90", _stats([r[2] - r[1] for r in rows]))
    table.add_row("all oxides: E_form - MP-20 E_form, median / MAE / p90", _stats([r[4] - r[3] for r in rows]))
    table.add_row("E_hull < -0.2 (flagged)", str(sum(r[2] < -0.2 for r in rows)))
    table.add_row("build (validate, relax, predict, stability)", f"{t_build:.0f} s")
    console.print(table)

    # the energy-scheme decision: CHGNet's E_form of the ground-state oxides against the table, as given and shifted
    ref = read_table()
    scheme = Table("oxides", "n", "as given", "as the registry loads it", "all moved by pymatgen", "MP-20's own",
                   title="CHGNet E_form - reference E_form on the ground-state oxides: median / MAE / p90 (eV/atom)")
    for label, keep in (("O the only anion", True), ("with another anion", False)):
        picked = [r for r in ground if r[0] in ref.compositions
                  and (not {el.symbol for el in Composition(r[0]).elements} & OTHER_ANIONS) == keep]
        given = [r[4] - ref.compositions[r[0]].formation_energies_as_given[0] for r in picked]
        loaded = [r[4] - ref.compositions[r[0]].formation_energy_per_atom for r in picked]
        everything = [g - _recorrected(r[0]) for g, r in zip(given, picked, strict=True)]
        scheme.add_row(label, str(len(picked)), _stats(given), _stats(loaded), _stats(everything),
                       _stats([r[4] - r[3] for r in picked]))
    console.print(scheme)


if __name__ == "__main__":
    main()
