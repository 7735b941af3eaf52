"""The paper's 10,000 CDVAE samples from import to ranked candidates, with the `tunnel` and `paper` presets.

    python bench/funnel.py [--limit N] [--workers 2] [--steps 500] [--presets tunnel,paper]

Fresh embedded database in a temporary folder; the shipped MP-20 sample is ingested first as the known compounds
(hull references and novelty). Prints, per preset and stage, the documents each stage took in, passed on, failed
and held back, and its wall time; then the candidates, and how far relaxation moved the screened energies (the
screen's margin is only safe if relaxation rarely brings a structure down by more than it).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from builders.chain import BuildOptions, build
from builders.run import StageReport
from generators.cdvae import CDVAESamples
from generators.run import run_generator
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.io.ingest import Ingestor
from registry.io.readers import iter_input_files, read_path
from registry.science.criteria import get_preset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "registry" / "data" / "sample"


def screen_misses(reg: Registry, presets: list[str], margin: float, channel_margin: float, ion: str) -> list[str]:
    """How often the screen would be wrong: structures both screened and relaxed (whatever preset let them through)
    that a preset's screen limit holds back but whose relaxed value is under that preset's limit; and, for the
    free-sphere limit, those the tunnels stage then finds with a 1-D channel that admits the ion."""
    static = {d["registry_id"]: d for d in reg.find({"state": "successful"}, collection="screened")}
    final = {d["registry_id"]: d for d in reg.find({"state": "successful"}, collection="stability")
             if d["registry_id"] in static}
    channels = {d["registry_id"]: d for d in reg.find({"state": "successful"}, collection="tunnels")
                if d["registry_id"] in static}
    lines = []
    for preset in presets:
        p = get_preset(preset)
        if p.channel_limit(ion, channel_margin) is not None:
            def check(m: float, p=p) -> tuple[float, int, int]:
                limit = p.channel_limit(ion, m)
                held = [r for r in channels if ((static[r].get("static_free_sphere") or {}).get(ion) or math.inf) < limit]
                return limit, len(held), sum(bool(channels[r]["has_1d_channel"] and channels[r]["admits"].get(ion))
                                             for r in held)

            limit, held, missed = check(channel_margin)
            lines.append(f"screen check, {preset}: static free sphere for {ion} < {limit:.2f} Å holds back {held} of "
                         f"{len(channels)} screened structures with a channel analysis; {missed} of them end with a "
                         f"1-D channel that admits {ion} after relaxation (missed)")
            lines.append("  the same structures at other channel margins (held back / missed): " + ", ".join(
                "{} Å: {}/{}".format(m, *check(m)[1:]) for m in (0.2, 0.3, 0.4, 0.5, 0.6, 0.8)))
        for field, limit in p.screen_limits(margin).items():
            name = field.removeprefix("static_")
            held = [rid for rid, d in final.items() if static[rid][field] > limit]
            missed = [rid for rid in held if final[rid][name] <= p.threshold(name)]
            lines.append(f"screen check, {preset}: {field} > {limit:.2f} holds back {len(held)} of {len(final)} "
                         f"screened-and-relaxed structures; {len(missed)} of them end under {p.threshold(name)} "
                         f"after relaxation (missed)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=SAMPLE / "cdvae" / "eval_gen_arrays.npz")
    parser.add_argument("--limit", type=int, help="Import only the first N samples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--presets", default="tunnel,paper")
    parser.add_argument("--margin", type=float, default=BuildOptions.margin)
    parser.add_argument("--channel-margin", type=float, default=BuildOptions.channel_margin)
    parser.add_argument("--keep", type=Path, help="Keep the database in this folder (default: a temporary one)")
    args = parser.parse_args()

    rows: list[tuple[str, str, int, int, int, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(args.keep or Path(tmp))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "funnel")
            t = time.perf_counter()
            mined = Ingestor(reg).write(r for p in iter_input_files([SAMPLE / "mp20"]) for r in read_path(p))
            rows.append(("-", "ingest MP-20 sample", mined.read, mined.ingested, mined.rejected, 0,
                         time.perf_counter() - t))
            t = time.perf_counter()
            generator = CDVAESamples(args.samples, limit=args.limit)
            run, report = run_generator(reg, generator)
            rows.append(("-", "import CDVAE samples", run.produced, report.ingested + report.unchanged,
                         run.rejected, 0, time.perf_counter() - t))
            t_all = time.perf_counter()
            summary = []
            for preset in args.presets.split(","):
                options = BuildOptions(preset=preset, workers=args.workers, steps=args.steps, margin=args.margin,
                                       channel_margin=args.channel_margin)
                clock = [time.perf_counter()]

                def record(r: StageReport, preset: str = preset, clock: list[float] = clock) -> None:
                    now = time.perf_counter()
                    rows.append((preset, r.stage, r.processed + r.gated, r.processed - r.failed, r.failed, r.gated,
                                 now - clock[0]))
                    clock[0] = now
                    print(f"{preset} {r.stage}: {rows[-1][2:]} done, {(now - t_all) / 60:.1f} min into the build",
                          flush=True)  # a run stopped short still says where its time went

                build(reg, "all", options, progress=True, on_stage=record)
                passed = reg.count({"preset": preset, "ion": options.ion, "passed": True}, collection="candidates")
                ranked = reg.count({"preset": preset, "ion": options.ion}, collection="candidates")
                summary.append(f"{preset}: {ranked} ranked, {passed} pass every hard criterion")
            total = time.perf_counter() - t_all
            drops = [d["initial_energy_per_atom"] - d["energy_per_atom"] for d in reg.find(
                {"state": "successful"}, collection="relaxed", fields=["initial_energy_per_atom", "energy_per_atom"])
                if d.get("initial_energy_per_atom") is not None]
            misses = screen_misses(reg, args.presets.split(","), args.margin, args.channel_margin, BuildOptions.ion)
            refined = reg.find({"state": "successful"}, collection="refined",
                               fields=["refined", "tier_one_energy_per_atom", "energy_per_atom"])
        finally:
            server.stop()

    table = Table("preset", "stage", "in", "out", "failed", "held back", "seconds",
                  title=f"funnel: {args.samples.name}{f' (first {args.limit})' if args.limit else ''}, "
                        f"{args.workers} workers, relax <= {args.steps} steps")
    for preset, stage, n_in, n_out, failed, held, seconds in rows:
        table.add_row(preset, stage, str(n_in), str(n_out), str(failed), str(held), f"{seconds:.0f}")
    Console().print(table)
    print("; ".join(summary))
    print(f"build time, all presets: {total / 60:.1f} min")
    for line in misses:
        print(line)
    moved = [d["energy_per_atom"] - d["tier_one_energy_per_atom"] for d in refined if d["refined"]]
    if refined:
        print(f"second tier ({BuildOptions.refine_potential}): {len(moved)} of {len(refined)} relaxed structures "
              f"refined" + (f"; its energy minus the relaxation's (eV/atom): median {statistics.median(moved):+.3f}, "
                            f"min {min(moved):+.3f}, max {max(moved):+.3f}" if moved else ""))
    if drops:
        q = statistics.quantiles(drops, n=20)
        print(f"relaxation energy drop over {len(drops)} structures (eV/atom): median {statistics.median(drops):.3f}, "
              f"95th percentile {q[-1]:.3f}, max {max(drops):.3f}")


if __name__ == "__main__":
    main()
