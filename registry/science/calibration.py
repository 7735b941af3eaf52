"""The channel thresholds fitted on known hosts: which (framework, ion) pairs the literature says are hosts, which
the tunnel preset must refuse, and the least free sphere and highest BVSE barrier that separate them.

Inputs, all in `registry/data/channels/` (README there and docs/channels.md):

* `host_labels.csv`: one row per framework of the library and ion (Li, Mg, Zn, Ca, Al), `host` with its source
  or `unknown` (unlabelled, not negative).
* `controls.csv`: pairs that must not be admitted (Mg in the 1x1 tunnels of rutile and pyrolusite, in dense
  anatase and brookite), with the reason. The literature gives no negative label the compiler could cite, so these
  are the registry's requirements, not measurements.
* `known_misses.csv`: labelled hosts the fitted rule does not admit, with the reason; the tests read it.

The fit, per calibration group (monovalent: Li+; multivalent: Mg2+, Zn2+, Ca2+, Al3+; see
`channels.calibration_group`), on each row's free-sphere diameter as a fraction of the ion's diameter (Df / 2r)
and its lowest BVSE percolation energy (E_1D):

1. Barrier: MAX_BARRIER (1.5 eV) is the ceiling; hosts percolating only above it cannot be kept by any rule that
   still means room-temperature mobility, and are left out of the geometry fit.
2. Geometry: the fraction is half-way between the narrowest remaining host and the widest control narrower than
   it (the largest margin to both); with no such control, the narrowest host's own value (the tightest rule that
   keeps every host). Rounded down to 0.01.
3. Barrier again: controls that pass the geometry are separated, where they can be, half-way between the highest
   host barrier and their lowest one; otherwise the ceiling stays.

A group without any labelled host keeps the uncalibrated rule (fraction 1: Df >= 2r; barrier at the ceiling).
Labelled rows are analysed as the registry would see such a host: a framework's tunnel cations (Ca of CaFe2O4)
replaced by the working ion, which the analysis then takes out (`host_structure`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Species, Structure

from registry import DATA
from registry.science.channels import (
    THRESHOLDS,
    _oxidation_states,
    analyze_channels,
    calibration_group,
    ion_radius,
    working_ion,
)
from registry.science.frameworks import get_framework
from schemas.tunnels import MAX_BARRIER

LABELS = DATA / "channels" / "host_labels.csv"
CONTROLS = DATA / "channels" / "controls.csv"
KNOWN_MISSES = DATA / "channels" / "known_misses.csv"
GROUPS = ("monovalent", "multivalent")


@dataclass(frozen=True)
class Row:
    """One (framework, ion) pair and what is known about it."""

    framework: str
    ion: str
    label: str  # "host", "non-host" (a control) or "unknown"
    source: str


@dataclass(frozen=True)
class Measurement:
    """A row analysed: the free sphere (Å) the ion sees, its radius (Å) and its BVSE percolation energies (eV)."""

    row: Row
    free_sphere: float
    radius: float
    e_1d: float | None
    e_2d: float | None
    e_3d: float | None

    @property
    def group(self) -> str:
        return calibration_group(working_ion(self.row.ion))

    @property
    def fraction(self) -> float:
        """Df / 2r: how wide the channel is for this ion, 1 when it fits as a hard sphere."""
        return self.free_sphere / (2 * self.radius)

    def admitted(self, fit: GroupFit) -> bool:
        """The rule of `channels.analyze_channels`: wide enough, and percolating (in any dimension) under the barrier."""
        return (self.free_sphere >= round(fit.fraction * 2 * self.radius, 4)
                and self.e_1d is not None and self.e_1d <= fit.max_barrier)


@dataclass(frozen=True)
class GroupFit:
    fraction: float
    max_barrier: float
    basis: str  # how the two numbers were reached, in words


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def labelled_rows() -> list[Row]:
    """Every row of host_labels.csv, in its order; a control (label 'non-host') takes the place of the `unknown` row
    of its pair. A control on a pair labelled `host` is a contradiction in the data and raises ValueError."""
    controls = {(r["framework"], r["ion"]): Row(r["framework"], r["ion"], "non-host", r["source"])
                for r in _read(CONTROLS)}
    rows = []
    for r in _read(LABELS):
        row = Row(r["framework"], r["ion"], r["label"], r["source"])
        control = controls.pop((row.framework, row.ion), None)
        if control and row.label == "host":
            raise ValueError(f"{row.framework} {row.ion} is labelled host and listed as a control")
        rows.append(control or row)
    return rows + list(controls.values())


def known_misses() -> dict[tuple[str, str], str]:
    """(framework, ion) -> why the fitted rule does not admit this labelled host."""
    return {(r["framework"], r["ion"]): r["reason"] for r in _read(KNOWN_MISSES)}


def is_tunnel_cation(species: Species) -> bool:
    """H+, alkali and alkaline-earth ions: what sits in tunnels, as `registry generate substitute` treats them."""
    return species.oxi_state > 0 and (species.symbol == "H" or species.element.is_alkali
                                      or species.element.is_alkaline)


def host_structure(framework_id: str, ion: str) -> Structure:
    """The framework as a host of `ion`: its tunnel cations replaced by the ion (as a substitution puts working ions
    into tunnels), the other species keeping the framework's oxidation states. Unchanged without tunnel cations."""
    decorated, _ = _oxidation_states(get_framework(framework_id).structure())
    tunnel = {sp: working_ion(ion) for sp in decorated.composition if is_tunnel_cation(sp)}
    if tunnel:
        decorated.replace_species(tunnel)
    return decorated


def measure(rows: Iterable[Row]) -> list[Measurement]:
    """Zeo++ and BVSE for each row's ion in its framework (a few seconds a row)."""
    out = []
    for row in rows:
        report = analyze_channels(host_structure(row.framework, row.ion), ions=(row.ion,))
        channel = report.ions[working_ion(row.ion).symbol]
        if channel.free_sphere is None or channel.error:
            raise ValueError(f"{row.framework} {row.ion}: cannot calibrate on it: {channel.error or report.error}")
        out.append(Measurement(row, channel.free_sphere, ion_radius(row.ion), channel.e_1d, channel.e_2d,
                               channel.e_3d))
    return out


def _floor(value: float) -> float:
    return math.floor(value * 100 + 1e-9) / 100


def fit_group(points: Sequence[Measurement]) -> GroupFit:
    """The two thresholds of one group from its labelled hosts and controls (the module docstring's steps)."""
    hosts = [m for m in points if m.row.label == "host"]
    controls = [m for m in points if m.row.label == "non-host"]
    reachable = [m for m in hosts if m.e_1d is not None and m.e_1d <= MAX_BARRIER]
    if not reachable:
        return GroupFit(1.0, MAX_BARRIER, "no labelled host: the uncalibrated rule Df >= 2r, barrier at the ceiling")
    narrowest = min(reachable, key=lambda m: m.fraction)
    below = [m for m in controls if m.fraction < narrowest.fraction]
    if below:
        widest = max(below, key=lambda m: m.fraction)
        fraction = _floor((narrowest.fraction + widest.fraction) / 2)
        geometry = (f"half-way between the narrowest host ({_name(narrowest)}, {narrowest.fraction:.3f}) and the "
                    f"widest narrower control ({_name(widest)}, {widest.fraction:.3f})")
    else:
        fraction = _floor(narrowest.fraction)
        geometry = f"the narrowest host ({_name(narrowest)}, {narrowest.fraction:.3f}); no control below it"
    passing = [m for m in controls if m.admitted(GroupFit(fraction, MAX_BARRIER, ""))]
    highest = max(m.e_1d for m in reachable)
    above = [m for m in passing if m.e_1d > highest]
    if above:
        lowest = min(above, key=lambda m: m.e_1d)
        max_barrier = _floor((highest + lowest.e_1d) / 2)
        barrier = f"half-way between the highest host barrier ({highest:.2f} eV) and {_name(lowest)} ({lowest.e_1d:.2f})"
    else:
        max_barrier = MAX_BARRIER
        why = ("no control in this group" if not controls else "every control fails the geometry" if not passing
               else "the controls passing the geometry percolate below the highest host")
        barrier = f"the {MAX_BARRIER} eV ceiling ({why})"
    return GroupFit(fraction, max_barrier, f"fraction: {geometry}; barrier: {barrier}")


def _name(m: Measurement) -> str:
    return f"{m.row.framework} {m.row.ion}"


def fit(measurements: Sequence[Measurement]) -> dict[str, GroupFit]:
    """Each calibration group's thresholds from the scored rows (hosts and controls) among `measurements`."""
    return {g: fit_group([m for m in measurements if m.group == g]) for g in GROUPS}


def shipped() -> dict[str, GroupFit]:
    """The thresholds the registry uses (registry/data/channels/thresholds.json)."""
    data = json.loads(THRESHOLDS.read_text(encoding="utf-8"))["groups"]
    return {g: GroupFit(d["fraction"], d["max_barrier"], d["basis"]) for g, d in data.items()}


def write_thresholds(fits: dict[str, GroupFit], measurements: Sequence[Measurement], path: Path = THRESHOLDS) -> None:
    """The thresholds file, with what it was fitted on."""
    scored = [m for m in measurements if m.row.label in ("host", "non-host")]
    body = {
        "description": "Channel thresholds fitted by registry.science.calibration on the labelled hosts and controls "
                       "of the framework library (see docs/channels.md). An ion is admitted when Zeo++'s free sphere "
                       "Df >= fraction x 2r (r: the ion's smallest tabulated Shannon radius; framework atoms at their "
                       "Shannon CN VI radii, O2- 1.40 A) and its BVSE region percolates at <= max_barrier (eV).",
        "groups": {g: {"fraction": f.fraction, "max_barrier": f.max_barrier, "basis": f.basis} for g, f in fits.items()},
        "fitted_on": {"hosts": sum(m.row.label == "host" for m in scored),
                      "controls": sum(m.row.label == "non-host" for m in scored),
                      "files": [LABELS.name, CONTROLS.name]},
    }
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Confusion:
    """Labelled rows against the rule's verdicts; unknown rows only counted."""

    hosts_admitted: list[Measurement]
    hosts_refused: list[Measurement]
    controls_admitted: list[Measurement]
    controls_refused: list[Measurement]
    unknown_admitted: list[Measurement]
    unknown_refused: list[Measurement]


def confusion(measurements: Sequence[Measurement], fits: dict[str, GroupFit]) -> Confusion:
    def split(label: str) -> tuple[list[Measurement], list[Measurement]]:
        rows = [m for m in measurements if m.row.label == label]
        return [m for m in rows if m.admitted(fits[m.group])], [m for m in rows if not m.admitted(fits[m.group])]

    return Confusion(*split("host"), *split("non-host"), *split("unknown"))
