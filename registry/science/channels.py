"""Open-channel (tunnel) geometry of a crystal and whether it lets a working ion through.

Two independent views, each computed on the host framework that a working ion sees (the structure with every
site of that ion's element removed, which is what BVlain does; see `IonChannel.in_structure`):

* Geometry, with Zeo++ (PyPI `pyzeo`): the diameters of the largest included sphere (Di), the largest free
  sphere that can cross the cell (Df) and the largest included sphere along that free path (Dif). Atoms are hard
  spheres with Shannon ionic radii for their oxidation state (`pymatgen.core.periodic_table` Shannon data, CN VI
  or the nearest tabulated coordination: the metal sites of transition-metal oxides are nearly all octahedral;
  O2- is 1.40 Å).
* Energy, with BVlain's bond-valence site energy (BVSE) for the working ion: the lowest energies at which the
  ion's low-energy region percolates in 1, 2 and 3 dimensions (E_1D, E_2D, E_3D).

An ion is admitted (`admits`) when the free sphere is at least its calibrated least diameter and its BVSE region
percolates at or below its calibrated barrier (`ion_limits`: fitted on the labelled hosts of the framework library,
registry/data/channels/thresholds.json and docs/channels.md). Hard spheres with Shannon radii are far too strict
taken literally (Df >= 2 r rejects Li+ in rutile, ramsdellite and anatase, all Li hosts): the least diameter is a
fraction of 2 r, 0.44 for Li+ and 0.90 for multivalent ions, which keeps every labelled host and still rejects
Mg2+ in the 1x1 tunnels of rutile and pyrolusite.

Df alone does not find tunnels: anatase has a larger Df than rutile, yet only rutile has 1x1 tunnels. What
separates them is the BVSE percolation: a tunnel has a low E_1D and E_2D/E_3D several eV higher (rutile Mg2+:
0.45 eV against 4.6 eV), while in anatase the ion's paths join in every direction at once (Mg2+: E_1D = E_2D =
0.92 eV, E_3D 1.03 eV). So each ion's `dimensionality` and `has_1d_channel` come from BVSE, and the tunnel
direction (`channel_axis`) from the lattice translation along which the 1-D BVSE region joins its own image.

Failures never raise for a structure: a part that cannot be computed (no oxidation states, no Shannon radius,
BVlain lacking parameters, Zeo++ failing, an unphysical structure) leaves its fields None and says why in an
`error` field; `ChannelReport.error` is set when nothing could be computed (`ChannelAnalysisError` is the
internal carrier of those reasons and never escapes). Bad arguments (an unknown ion) raise `ValueError`.
Zeo++ prints progress on the C-level stdout and stderr, which are silenced (process-wide, for ~20 ms) while it
runs, and it calls exit() for an atom type missing from its tables; it is therefore only ever given atom types
listed in the radius file it is handed, with masses switched off.

Cost: BVSE dominates (a k-nearest-neighbour sum on a grid, then 30 connected-component labellings, per ion);
Zeo++ takes ~20 ms. For the four default ions, on a shared 2-core machine: 1-6 s for the references, mean 3.4 s
(median 3.0 s, worst 16 s) over 40 MP-20 oxides. The grid is coarsened for large cells so that memory stays
below about half a GB (see MAX_GRID_POINTS).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import itertools
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from functools import cache, reduce
from pathlib import Path
from typing import Literal

import numpy as np
from bvlain import Lain
from pymatgen.analysis.bond_valence import BVAnalyzer
from pymatgen.core import Element, Species, Structure
from pymatgen.io.zeopp import ZeoCssr
from pyzeo import AtomNetwork
from scipy import ndimage

from registry import DATA
from registry.science.validity import structure_problem
from schemas.tunnels import (
    ENCUT,
    MAX_BARRIER,
    NEIGHBOURS,
    RESOLUTION,
    ChannelAxis,
    ChannelReport,
    ChannelSettings,
    FreeSpheres,
    IonChannel,
    IonLimits,
    SpeciesRadius,
)

DEFAULT_IONS = ("Mg", "Zn", "Ca", "Al")
# The calibrated thresholds (written by bench/channels.py --write from registry.science.calibration's fit).
THRESHOLDS = DATA / "channels" / "thresholds.json"

# BVlain holds ~15 float64 arrays of NEIGHBOURS values per grid point: 64k points is ~0.4 GB at peak.
MAX_GRID_POINTS = 64_000
FRAMEWORK_CN = 6  # Shannon coordination for framework ions (VI), or the nearest one tabulated
# An E_1D path is traced at E_1D plus this (eV): BVlain bisects to 0.01 eV on a grid with duplicated faces.
AXIS_TOLERANCE = 0.05

_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "X": 10,
          "XI": 11, "XII": 12, "XIII": 13, "XIV": 14}
# Half of the 26 neighbour offsets: each pair of neighbouring voxels is seen once.
_HALF_OFFSETS = np.array([o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)])


class ChannelAnalysisError(Exception):
    """Why one part of the analysis could not be done; caught inside `analyze_channels` and turned into text."""


def working_ion(name: str) -> Species:
    """'Mg2+' as given, or 'Mg' with its single common oxidation state; anything else is a caller's mistake."""
    try:
        if name.isalpha():
            element = Element(name)
            if len(element.common_oxidation_states) != 1:
                raise ValueError(f"{name} has several common oxidation states; give one, e.g. '{name}2+'")
            return Species(name, element.common_oxidation_states[0])
        species = Species.from_str(name)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a working ion: {name!r} ({exc})") from exc
    if not species.oxi_state or not float(species.oxi_state).is_integer():
        raise ValueError(f"a working ion needs an integer charge: {name!r}")
    return species


@cache
def thresholds() -> tuple[dict, str]:
    """The calibrated thresholds file and the first 12 hex digits of its sha256 (what reports record)."""
    text = THRESHOLDS.read_text(encoding="utf-8")
    return json.loads(text), hashlib.sha256(text.encode()).hexdigest()[:12]


def calibration_group(ion: Species) -> str:
    """'monovalent' or 'multivalent': the labelled hosts are too few to fit each multivalent ion alone, and how far
    an ion squeezes through a bottleneck depends first on its charge (docs/channels.md)."""
    return "monovalent" if ion.oxi_state <= 1 else "multivalent"


def ion_limits(name: str) -> IonLimits:
    """The least free-sphere diameter and the highest BVSE barrier that admit the working ion `name`."""
    ion = working_ion(name)
    group = calibration_group(ion)
    fitted = thresholds()[0]["groups"][group]
    radius = _mobile_radius(ion)[0]
    return IonLimits(group=group, fraction=fitted["fraction"], min_free_sphere=round(fitted["fraction"] * 2 * radius, 4),
                     max_barrier=fitted["max_barrier"])


def analyze_channels(
    structure: Structure,
    ions: Sequence[str] = DEFAULT_IONS,
    *,
    max_barrier: float | None = None,
    resolution: float = RESOLUTION,
    encut: float = ENCUT,
    bvse: bool = True,
) -> ChannelReport:
    """Zeo++ free spheres and BVSE percolation of each working ion, with the verdicts derived from them.

    ions: element symbols (their single common charge) or species strings such as "Mg2+".
    max_barrier: one BVSE percolation energy (eV) up to which a path is open for every ion; None: each ion's
        calibrated limit (`ion_limits`). The least free sphere is always the calibrated one.
    resolution: BVSE grid spacing (Å); coarsened for large cells (see MAX_GRID_POINTS).
    encut: BVSE energies above this (eV) count as no percolation.
    bvse: False gives the geometry alone (tens of ms instead of seconds): each ion's free sphere and whether it
        fits, no dimensionality; what the static screen needs.
    """
    species = [working_ion(name) for name in ions]
    a, b, c = structure.lattice.abc
    used_resolution = max(resolution, (a * b * c / MAX_GRID_POINTS) ** (1 / 3))
    settings = ChannelSettings(max_barrier=max_barrier, calibration=thresholds()[1], resolution=round(used_resolution, 4),
                               encut=encut)
    report = ChannelReport(formula=structure.composition.reduced_formula, settings=settings)
    try:
        if problem := structure_problem(structure):
            raise ChannelAnalysisError(problem)
        decorated, report.oxidation_state_source = _oxidation_states(structure)
    except ChannelAnalysisError as exc:
        report.error = str(exc)
        return report

    radii: dict[str, float] = {}
    problems = []
    for sp, sites in decorated.composition.items():
        entry = SpeciesRadius(species=str(sp), sites=round(sites))
        try:
            entry.radius, entry.source = _framework_radius(sp)
            radii[str(sp)] = entry.radius
        except ChannelAnalysisError as exc:
            problems.append(str(exc))
        report.species.append(entry)
    try:
        if problems:
            raise ChannelAnalysisError("; ".join(problems))
        report.zeopp = _free_spheres(decorated, radii)
    except ChannelAnalysisError as exc:
        report.zeopp_error = str(exc)

    for ion in species:
        report.ions[ion.symbol] = _ion_channel(decorated, ion, report, radii, max_barrier, used_resolution, encut,
                                               bvse)

    one_d = [ch for ch in report.ions.values() if ch.dimensionality == 1 and ch.path_vector is not None]
    decided = [ch for ch in report.ions.values() if ch.dimensionality is not None]
    report.has_1d_channel = any(ch.dimensionality == 1 for ch in decided) if decided else None
    if one_d:
        report.channel_axis = _axis(structure, min(one_d, key=lambda ch: ch.e_1d).path_vector)
    if report.zeopp is None and not decided:
        report.error = report.zeopp_error or next((ch.error for ch in report.ions.values()), None)
    return report


def _ion_channel(structure: Structure, ion: Species, report: ChannelReport, radii: dict[str, float],
                 max_barrier: float | None, resolution: float, encut: float, bvse: bool) -> IonChannel:
    in_structure = ion.symbol in {sp.symbol for sp in structure.composition}
    channel = IonChannel(ion=str(ion), in_structure=in_structure)
    errors = []
    try:
        channel.radius, channel.radius_coordination = _mobile_radius(ion)
        channel.limits = ion_limits(str(ion))
        if max_barrier is not None:
            channel.limits.max_barrier = max_barrier
        if report.zeopp_error:
            raise ChannelAnalysisError(report.zeopp_error)
        spheres = _free_spheres(_without(structure, ion.symbol), radii) if in_structure else report.zeopp
        channel.free_sphere = spheres.df
        channel.fits = spheres.df >= channel.limits.min_free_sphere
    except ChannelAnalysisError as exc:
        errors.append(f"geometry: {exc}")
    if bvse:
        try:
            grid, barriers = _bvse(structure, ion, resolution, encut)
            channel.e_1d, channel.e_2d, channel.e_3d = barriers
            limit = channel.limits.max_barrier if channel.limits else max_barrier or MAX_BARRIER
            channel.dimensionality = max((d for d, e in enumerate(barriers, 1) if e is not None and e <= limit),
                                         default=0)
            if channel.dimensionality == 1:
                channel.path_vector = _path_vector(grid, channel.e_1d + AXIS_TOLERANCE)
        except ChannelAnalysisError as exc:
            errors.append(f"BVSE: {exc}")
    if channel.fits is not None and channel.dimensionality is not None:
        channel.admits = channel.fits and channel.dimensionality >= 1
    elif channel.fits is False or channel.dimensionality == 0:
        channel.admits = False  # one view alone already rules it out
    channel.error = "; ".join(errors) or None
    return channel


def _oxidation_states(structure: Structure) -> tuple[Structure, Literal["input", "bv_analyzer", "composition_guess"]]:
    """The structure with oxidation states: as given, else BVAnalyzer's per site, else pymatgen's likeliest guess
    per element (which may be fractional for a mixed-valence cation, e.g. Ni3.5+ in LiNi2O4; BVSE only needs the
    anions' charges to be integers, and a radius is interpolated)."""
    if all(isinstance(sp, Species) and sp.oxi_state is not None for sp in structure.composition):
        decorated, source = structure, "input"
    else:
        plain = structure.copy()
        plain.remove_oxidation_states()
        try:
            decorated, source = BVAnalyzer().get_oxi_state_decorated_structure(plain), "bv_analyzer"
        except (ValueError, KeyError):  # no balanced assignment, or an element without bond-valence parameters
            try:
                guesses = plain.composition.oxi_state_guesses(max_sites=-50)
            except ValueError:  # too many sites to enumerate
                guesses = ()
            if not guesses:
                raise ChannelAnalysisError("no oxidation states: neither BVAnalyzer nor a composition guess "
                                           f"balances {plain.composition.reduced_formula}") from None
            decorated, source = plain.copy(), "composition_guess"
            decorated.add_oxidation_state_by_element(guesses[0])
    states = [sp.oxi_state for sp in decorated.composition]
    if not (min(states) < 0 < max(states)):
        raise ChannelAnalysisError(f"not ionic: {decorated.composition.reduced_formula} has no anion and cation "
                                   "after assigning oxidation states")
    return decorated, source


def _framework_radius(sp: Species) -> tuple[float, str]:
    """Shannon ionic radius of a framework ion at CN VI or the nearest tabulated CN (high spin where it matters).

    An oxidation state Shannon does not list takes the radius interpolated between the listed states around it
    (fractional mixed valence) or of the nearest listed state of the same sign (e.g. Ir6+ -> Ir5+, O- -> O2-);
    the source says so. Negative Shannon radii (H+, whose electrons sit in its O-H bond) become 0, as Zeo++
    needs r >= 0.
    """
    q = float(sp.oxi_state)
    shannon = sp.element.data.get("Shannon radii", {})
    states = {int(k): _at_coordination(Species(sp.symbol, int(k)), table) for k, table in shannon.items()
              if k.lstrip("-").isdigit() and int(k) * q > 0}  # pymatgen's table has a stray "" key for Eu
    if not states:
        raise ChannelAnalysisError(f"no Shannon radius for {sp.element} ions of the sign of {sp}")
    below = [s for s in states if s <= q]
    above = [s for s in states if s >= q]
    if below and above and max(below) != min(above):
        lo, hi = max(below), min(above)
        weight = (q - lo) / (hi - lo)
        radius = (1 - weight) * states[lo][0] + weight * states[hi][0]
        source = f"Shannon ionic, interpolated between {states[lo][1]} and {states[hi][1]}"
    else:
        nearest = min(states, key=lambda s: (abs(s - q), s))
        radius, label = states[nearest]
        source = "Shannon ionic, " + (label if nearest == q else f"{label} (nearest listed state)")
    if radius < 0:
        return 0.0, f"{source}: {radius} Å taken as 0"
    return radius, source


def _at_coordination(species: Species, table: dict[str, dict[str, dict[str, float]]]) -> tuple[float, str]:
    cn = min(table, key=lambda key: (abs(_cn_number(key) - FRAMEWORK_CN), _cn_number(key), key))
    spin = "High Spin" if "High Spin" in table[cn] else next(iter(table[cn]))
    return table[cn][spin]["ionic_radius"], f"{species} CN {cn}" + (f" {spin.lower()}" if spin else "")


def ion_radius(name: str) -> float:
    """The working ion's radius (Å) at a bottleneck; its calibrated least free sphere is a fraction of 2 x this."""
    return _mobile_radius(working_ion(name))[0]


def _mobile_radius(ion: Species) -> tuple[float, str]:
    """A migrating ion squeezes through bottlenecks in low coordination: its smallest tabulated Shannon radius."""
    table = ion.element.data.get("Shannon radii", {}).get(str(int(ion.oxi_state)))
    if not table:
        raise ChannelAnalysisError(f"no Shannon radius for {ion}")
    return min((entry["ionic_radius"], cn) for cn, spins in table.items() for entry in spins.values())


def _cn_number(cn: str) -> int:
    return _ROMAN[cn.removesuffix("SQ").removesuffix("PY")]


def _without(structure: Structure, symbol: str) -> Structure:
    framework = structure.copy()
    framework.remove_sites([i for i, site in enumerate(structure) if site.specie.symbol == symbol])
    return framework


@contextmanager
def _silenced_c_output() -> Iterator[None]:
    """Zeo++ and Voro++ write progress to the C-level stdout/stderr; send both (process-wide, briefly) nowhere."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        libc.fflush(None)
        for fd, copy in enumerate(saved, 1):
            os.dup2(copy, fd)
            os.close(copy)


def _free_spheres(framework: Structure, radii: dict[str, float]) -> FreeSpheres:
    """Zeo++ Di/Df/Dif through pyzeo, reading a CSSR written by pymatgen, with one radius per species.

    pymatgen's `get_free_sphere_params` does the same but changes the working directory (unsafe next to threads,
    fails in a read-only one) and leaves masses on, so an unknown atom type makes Zeo++ exit the process.
    """
    if not len(framework):
        raise ChannelAnalysisError("no atoms left in the framework")
    with tempfile.TemporaryDirectory(prefix="zeopp-") as tmp:
        cssr, rad, res = (Path(tmp, name) for name in ("s.cssr", "s.rad", "s.res"))
        ZeoCssr(framework).write_file(str(cssr))
        rad.write_text("".join(f"{sp} {radii[sp]}\n" for sp in sorted({site.species_string for site in framework})))
        try:
            with _silenced_c_output():
                network = AtomNetwork.read_from_CSSR(str(cssr), rad_flag=True, rad_file=str(rad), mass_flag=False)
                network.calculate_free_sphere_parameters(str(res))
        except Exception as exc:  # pyzeo raises bare IOError and the like
            raise ChannelAnalysisError(f"Zeo++ failed: {type(exc).__name__}: {exc}") from None
        fields = res.read_text().split()[-3:] if res.exists() else []
    try:
        di, df, dif = (float(x) for x in fields)
    except ValueError:
        raise ChannelAnalysisError(f"Zeo++ wrote no free-sphere result (got {fields!r})") from None
    if not all(map(math.isfinite, (di, df, dif))):
        raise ChannelAnalysisError(f"Zeo++ returned non-finite diameters {di}, {df}, {dif}")
    return FreeSpheres(di=di, df=df, dif=dif)


class _Lain(Lain):
    """BVlain's calculator with its percolation-dimension count vectorised: the same number, found in one pass.

    BVlain scans the whole 2x2x2 grid once per connected region (`np.argwhere(labels == feature)`), which takes
    tens of seconds when a threshold leaves thousands of small regions. Its measure is kept exactly: for each
    region, how many of the 8 images of its first voxel (C order) in the 2x2x2 supercell belong to it.
    """

    def _percolation_dimension(self, labels: np.ndarray, features: np.ndarray) -> int:
        regions, first = np.unique(labels, return_index=True)
        regions, first = regions[regions > 0], first[regions > 0]
        if not len(regions):
            return 0
        cell = np.array(labels.shape) // 2
        probe = np.column_stack(np.unravel_index(first, labels.shape))
        home = probe // cell
        images = sum(labels[tuple((probe + (np.array(t) - home) * cell).T)] == regions
                     for t in itertools.product((0, 1), repeat=3))
        return int(images.max())


def _bvse(structure: Structure, ion: Species, resolution: float, encut: float) -> tuple[np.ndarray, list[float | None]]:
    """BVlain's BVSE grid for the ion (its element removed from the framework) and its 1/2/3-D percolation energies."""
    try:
        with redirect_stdout(io.StringIO()):  # BVlain prints "Oops..." before raising
            lain = _Lain(verbose=False)
            lain.read_structure(structure, oxi_check=False)
            grid = lain.bvse_distribution(mobile_ion=str(ion), resolution=resolution, k=NEIGHBOURS)
            barriers = lain.percolation_barriers(encut=encut)
    except KeyError as exc:
        framework = ", ".join(str(sp) for sp in structure.composition if sp.symbol != ion.symbol)
        key = exc.args[0] if exc.args else "?"
        raise ChannelAnalysisError(f"BVlain has no BVSE parameters for {ion} with {framework} "
                                   f"(no entry for {key!s} in its tables)") from None
    except Exception as exc:  # a third-party numerical code: any failure is this structure's reason, not a crash
        raise ChannelAnalysisError(f"BVlain failed for {ion}: {type(exc).__name__}: {exc}") from None
    return grid, [float(barriers[f"E_{d}D"]) if np.isfinite(barriers[f"E_{d}D"]) else None for d in (1, 2, 3)]


def _path_vector(grid: np.ndarray, threshold: float) -> tuple[int, int, int] | None:
    """The lattice direction [uvw] of the region below threshold, when it percolates in exactly one direction.

    BVlain reports only how many cells a percolating region spans, not which way. Here the grid's voxels below
    the threshold are labelled in one cell, the labels are joined across the cell faces with the lattice shift of
    each crossing, and every closed loop of that graph gives a translation that takes the region onto itself.
    """
    periodic = grid[:-1, :-1, :-1]  # BVlain's mesh includes both fractional 0 and 1
    mask = periodic - grid.min() <= threshold
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    shape = np.array(mask.shape)
    index = np.indices(mask.shape).reshape(3, -1).T
    source = labels.reshape(-1)
    rows = []
    for offset in _HALF_OFFSETS:
        moved = index + offset
        shift = np.floor_divide(moved, shape)
        crossing = shift.any(axis=1) & (source > 0)
        target = labels[tuple((moved[crossing] % shape).T)]
        keep = target > 0
        rows.append(np.column_stack([source[crossing][keep], target[keep], shift[crossing][keep]]))
    edges = np.unique(np.concatenate(rows), axis=0)

    neighbours: dict[int, list[tuple[int, np.ndarray]]] = {}
    for a, b, *s in edges:
        neighbours.setdefault(a, []).append((b, np.array(s)))
        neighbours.setdefault(b, []).append((a, -np.array(s)))
    directions: set[tuple[int, int, int]] = set()
    position: dict[int, np.ndarray] = {}
    for start in neighbours:
        if start in position:
            continue
        position[start] = np.zeros(3, dtype=int)
        stack, loops = [start], []
        while stack:
            node = stack.pop()
            for other, s in neighbours[node]:
                reached = position[node] + s
                if other not in position:
                    position[other] = reached
                    stack.append(other)
                elif (reached != position[other]).any():
                    loops.append(reached - position[other])
        if not loops:
            continue
        if np.linalg.matrix_rank(np.array(loops)) != 1:
            return None  # this region percolates in 2-D or 3-D at the threshold
        directions.add(_primitive(loops[0]))
    return directions.pop() if len(directions) == 1 else None


def _primitive(vector: np.ndarray) -> tuple[int, int, int]:
    """The shortest integer vector along `vector`, first non-zero component positive."""
    v = vector // reduce(math.gcd, (int(x) for x in vector))
    if v[np.nonzero(v)[0][0]] < 0:
        v = -v
    return int(v[0]), int(v[1]), int(v[2])


def _axis(structure: Structure, uvw: tuple[int, int, int]) -> ChannelAxis:
    vector = np.array(uvw) @ structure.lattice.matrix
    length = float(np.linalg.norm(vector))
    labels = {(1, 0, 0): "a", (0, 1, 0): "b", (0, 0, 1): "c"}
    return ChannelAxis(uvw=uvw, label=labels.get(uvw), cartesian=tuple(round(float(x), 6) for x in vector / length),
                       repeat=round(length, 4))
