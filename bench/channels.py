"""Seconds per structure of `analyze_channels` on the tunnel references and on MP-20 oxides.

    PYTHONPATH=. python bench/channels.py [--oxides 20] [--data /work/shared/data]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
import warnings
from pathlib import Path

from pymatgen.core import Structure

from registry.science.channels import analyze_channels


def _row(name: str, structure: Structure) -> float:
    start = time.perf_counter()
    report = analyze_channels(structure)
    seconds = time.perf_counter() - start
    admitted = ",".join(el for el, ch in report.ions.items() if ch.admits) or "-"
    df = f"{report.zeopp.df:.2f}" if report.zeopp else "-"
    axis = report.channel_axis.uvw if report.channel_axis else "-"
    print(f"{name:<44} {len(structure):>3} {seconds:6.2f}s  Df {df:>5}  1-D {report.has_1d_channel!s:<5} "
          f"axis {axis!s:<11} admits {admitted:<12} {report.error or ''}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--oxides", type=int, default=20, help="how many MP-20 oxides (in file order)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    times = [_row(cif.stem[:44], Structure.from_file(cif))
             for cif in sorted((args.data / "tunnel_references").glob("*.cif"))]
    print(f"references: mean {statistics.mean(times):.2f} s per structure\n")

    times = []
    for path in sorted((args.data / "mp20_sample").glob("*.csv")):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if len(times) == args.oxides:
                    break
                if "'O'" in row["elements"]:
                    structure = Structure.from_str(row["cif"], fmt="cif")
                    times.append(_row(f"{row['material_id']} {row['pretty_formula']}", structure))
    if times:
        print(f"MP-20 oxides: {len(times)}, mean {statistics.mean(times):.2f} s, "
              f"median {statistics.median(times):.2f} s, max {max(times):.2f} s per structure")


if __name__ == "__main__":
    main()
