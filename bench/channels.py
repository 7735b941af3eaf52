"""The channel criteria on the framework library: every (framework, ion) row measured, the thresholds fitted on the
labelled hosts and controls, and the confusion table (the tables of docs/channels.md).

    PYTHONPATH=. python bench/channels.py [--write] [--oxides 20] [--data ../shared/data]

--write stores the fit in registry/data/channels/thresholds.json (what the registry then uses). --oxides also
times `analyze_channels` (the four default ions) on that many MP-20 oxides.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
import warnings
from pathlib import Path

from pymatgen.core import Structure

from registry.science.calibration import (
    GroupFit,
    Measurement,
    confusion,
    fit,
    known_misses,
    labelled_rows,
    measure,
    write_thresholds,
)
from registry.science.channels import analyze_channels


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _dimension(m: Measurement, f: GroupFit) -> int:
    return max((d for d, e in enumerate((m.e_1d, m.e_2d, m.e_3d), 1) if e is not None and e <= f.max_barrier),
               default=0)


def rows_table(measurements: list[Measurement], fits: dict[str, GroupFit]) -> None:
    misses = known_misses()
    print("| framework | ion | label | Df (Å) | 2r (Å) | Df/2r | E_1D | E_2D | E_3D | dim | admitted | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in measurements:
        f = fits[m.group]
        admitted = m.admitted(f)
        verdict = {"host": "ok" if admitted else ("known miss" if (m.row.framework, m.row.ion) in misses else "MISS"),
                   "non-host": "ok" if not admitted else "FALSE HOST"}.get(m.row.label, "")
        print(f"| {m.row.framework} | {m.row.ion} | {m.row.label} | {m.free_sphere:.2f} | {2 * m.radius:.2f} | "
              f"{m.fraction:.2f} | {_e(m.e_1d)} | {_e(m.e_2d)} | {_e(m.e_3d)} | {_dimension(m, f)} | "
              f"{'yes' if admitted else 'no'} | {verdict} |")


def confusion_table(measurements: list[Measurement], fits: dict[str, GroupFit]) -> None:
    c = confusion(measurements, fits)
    print("| label | admitted | refused |")
    print("|---|---|---|")
    print(f"| host ({len(c.hosts_admitted) + len(c.hosts_refused)}) | {len(c.hosts_admitted)} | {len(c.hosts_refused)} |")
    print(f"| control, non-host ({len(c.controls_admitted) + len(c.controls_refused)}) | {len(c.controls_admitted)} | "
          f"{len(c.controls_refused)} |")
    print(f"| unknown ({len(c.unknown_admitted) + len(c.unknown_refused)}) | {len(c.unknown_admitted)} | "
          f"{len(c.unknown_refused)} |")


def timing(data: Path, n: int) -> None:
    times = []
    for path in sorted((data / "mp20_sample").glob("*.csv")):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if len(times) == n:
                    break
                if "'O'" in row["elements"]:
                    start = time.perf_counter()
                    analyze_channels(Structure.from_str(row["cif"], fmt="cif"))
                    times.append(time.perf_counter() - start)
    if times:
        print(f"\nMP-20 oxides: {len(times)}, mean {statistics.mean(times):.2f} s, "
              f"median {statistics.median(times):.2f} s, max {max(times):.2f} s per structure")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the fit as the registry's thresholds")
    parser.add_argument("--oxides", type=int, default=0, help="also time this many MP-20 oxides (in file order)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    start = time.perf_counter()
    measurements = measure(labelled_rows())
    fits = fit(measurements)
    print(f"{len(measurements)} rows measured in {time.perf_counter() - start:.0f} s\n")
    for group, f in fits.items():
        print(f"- {group}: fraction {f.fraction}, max_barrier {f.max_barrier} eV ({f.basis})")
    print()
    rows_table(measurements, fits)
    print()
    confusion_table(measurements, fits)
    if args.write:
        write_thresholds(fits, measurements)
        print("\nwritten: registry/data/channels/thresholds.json")
    if args.oxides:
        timing(args.data, args.oxides)


if __name__ == "__main__":
    main()
