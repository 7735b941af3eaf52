"""Multivalent-ion insertion into a framework's open channels with a universal potential: where the ions sit,
how many the framework can take, and the electrode that makes (voltage, capacity, energy, volume change, E_hull).

For one framework and one working ion (Mg2+, Zn2+, Ca2+, Al3+):

1. Sites: local minima of BVlain's bond-valence site energy (BVSE) for the ion that lie in a region percolating
   below `max_energy` (the tunnels stage's rule for an open channel), merged within `MERGE_DISTANCE` and grouped
   into symmetry orbits of the framework. The `max_sites` lowest orbits are tried.
2. How many ions: the electrons the framework's transition metals can take, each metal site going from its
   bond-valence oxidation state down to its floor in oxides (`registry.science.redox`: W6+ -> W4+, Sc3+ none),
   divided by the ion's charge; and no more
   than the sites hold at `min_separation` apart. When the cell holds fewer than `max_levels` ions it is repeated
   along the channel, up to `max_atoms` atoms.
3. Configurations: `max_levels` ion counts evenly spaced up to that maximum. For each count the ions are placed
   greedily, the first on one orbit's representative and each next one on the lowest-BVSE free position at least
   `min_separation` from the others (ties: the farthest); one configuration per starting orbit, at most
   `max_configurations` per count.
4. Relaxation: atoms and cell, the host and every configuration in one lockstep batch with the same potential; the
   lowest energy per ion count is kept. The working-ion metal (hcp Mg and Zn, fcc Ca and Al) relaxed with that
   potential is the anode of the voltage.
5. The electrode: emmet-core's `InsertionElectrodeDoc` (pymatgen's `InsertionElectrode` underneath), with each
   state's E_hull against the registry's reference hull of the full chemical system (framework and ion:
   `registry.science.hull.ReferenceHull`, the loaded MP reference set and mined compounds) with the computed
   states added.
6. Conversion: the reaction of the host with the same ions into that hull's phases, and whether it gives a
   higher voltage than intercalation (`registry.science.conversion`): then the host would convert.

Everything here is an ML estimate of a theoretical electrode: full reduction down to the floor is an upper bound,
the greedy orderings are few, and the BVSE grid places ions to ~0.25 Å before relaxation.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from contextlib import redirect_stdout
from io import StringIO
from typing import TYPE_CHECKING, Literal

import numpy as np
from bvlain import Lain
from emmet.core.electrode import InsertionElectrodeDoc
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Lattice, Species, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy import ndimage

from registry.science.channels import MAX_BARRIER, MAX_GRID_POINTS, NEIGHBOURS, RESOLUTION, _oxidation_states, working_ion
from registry.science.conversion import conversion
from registry.science.hull import ReferenceHull, reference_entry
from registry.science.redox import electrons, reduction_floor
from registry.science.references import REFERENCE_NAME, formation_energy_per_atom
from registry.science.relaxation import RelaxResult, RelaxSettings, relax, relax_batch
from schemas.insertion import (
    InsertionSettings,
    InsertionSite,
    IonInsertion,
    MetalReference,
    ReducibleMetal,
    Relaxation,
)

if TYPE_CHECKING:
    from registry.science.potentials import Potential

MERGE_DISTANCE = 0.5  # Å: BVSE minima closer than this are one site (a flat channel floor has several grid minima)
MAX_MINIMA = 500  # lowest grid minima considered; a flat, empty region could otherwise give thousands
# The working-ion metals at their room-temperature lattice constants (Å); the potential relaxes them.
METALS: dict[str, tuple[Literal["hcp", "fcc"], float, float | None]] = {
    "Mg": ("hcp", 3.209, 5.211), "Zn": ("hcp", 2.665, 4.947), "Ca": ("fcc", 5.588, None), "Al": ("fcc", 4.050, None),
}


class InsertionError(ValueError):
    """Why a framework cannot take the ion (no sites, nothing to reduce, no relaxed state); stored as the reason."""


# --- Oxidation states and capacity ---

def reducible_metals(decorated: Structure) -> list[ReducibleMetal]:
    """Electrons each transition metal of the framework can take, from its oxidation state down to its floor in
    oxides (`registry.science.redox`); a metal the floor table does not cover takes none."""
    states: dict[str, list[float]] = {}
    for site in decorated:
        sp = site.specie
        if sp.element.is_transition_metal and getattr(sp, "oxi_state", None):
            states.setdefault(sp.symbol, []).append(float(sp.oxi_state))
    out = []
    for symbol, q in sorted(states.items()):
        floor = reduction_floor(symbol)
        out.append(ReducibleMetal(element=symbol, sites=len(q), oxidation_state=round(float(np.mean(q)), 4),
                                  floor=floor, electrons=round(sum(electrons(symbol, x) for x in q), 4)))
    return out


# --- Sites ---

def find_sites(structure: Structure, ion: str, *, max_energy: float = MAX_BARRIER,
               resolution: float = RESOLUTION) -> tuple[list[InsertionSite], list[np.ndarray]]:
    """Symmetry orbits of the ion's BVSE minima in the open-channel region, lowest energy first, with each orbit's
    positions (fractional, unit cell). Atoms of the ion's own element are left out of the framework, as BVlain
    and the tunnels stage do."""
    species = working_ion(ion)
    try:
        decorated, _ = _oxidation_states(structure)
    except Exception as exc:  # ChannelAnalysisError: no balanced oxidation states
        raise InsertionError(f"no oxidation states for BVSE: {exc}") from None
    grid = _bvse_grid(decorated, species, resolution)
    periodic = grid[:-1, :-1, :-1] - grid.min()  # BVlain's mesh includes both fractional 0 and 1
    shape = np.array(periodic.shape)
    minima = np.argwhere((periodic == ndimage.minimum_filter(periodic, size=3, mode="wrap"))
                         & (periodic <= max_energy))
    minima = minima[_percolating(periodic <= max_energy, minima)]
    if not len(minima):
        raise InsertionError(f"no BVSE minimum for {species} in a region that percolates below {max_energy} eV")
    energies = periodic[tuple(minima.T)]
    order = np.argsort(energies, kind="stable")[:MAX_MINIMA]
    frac, energies = minima[order] / shape, energies[order]

    framework = structure.copy()
    framework.remove_species([sp for sp in structure.composition if sp.symbol == species.symbol])
    lattice = structure.lattice
    ops = SpacegroupAnalyzer(framework, symprec=0.1).get_symmetry_operations(cartesian=False)
    sites: list[InsertionSite] = []
    orbits: list[np.ndarray] = []
    for f, e in zip(frac, energies, strict=True):
        if any(lattice.get_all_distances([f], orbit).min() < MERGE_DISTANCE for orbit in orbits):
            continue  # a member of a lower orbit, or the same flat minimum
        orbit = _merged([op.operate(f) for op in ops], lattice)
        f = orbit[0]
        d = lattice.get_all_distances([f], framework.frac_coords)[0]
        nearest = int(d.argmin())
        sites.append(InsertionSite(frac_coords=tuple(round(float(x), 4) for x in f), bvse_energy=round(float(e), 4),
                                   multiplicity=len(orbit), min_distance=round(float(d[nearest]), 3),
                                   nearest=framework[nearest].species_string))
        orbits.append(orbit)
    return sites, orbits


def _bvse_grid(decorated: Structure, species: Species, resolution: float) -> np.ndarray:
    """BVlain's BVSE energy grid (eV) for the ion, with the tunnels stage's grid rules."""
    a, b, c = decorated.lattice.abc
    used = max(resolution, (a * b * c / MAX_GRID_POINTS) ** (1 / 3))
    try:
        with redirect_stdout(StringIO()):  # BVlain prints before it raises
            lain = Lain(verbose=False)
            lain.read_structure(decorated, oxi_check=False)
            return lain.bvse_distribution(mobile_ion=str(species), resolution=used, k=NEIGHBOURS)
    except KeyError as exc:
        raise InsertionError(f"BVlain has no BVSE parameters for {species} here ({exc})") from None
    except Exception as exc:  # a third-party numerical code: this framework's reason, not a crash
        raise InsertionError(f"BVlain failed for {species}: {type(exc).__name__}: {exc}") from None


def _percolating(mask: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """Which voxels lie in a region of `mask` (periodic) that joins one of its own images: a channel, not a pocket.
    The grid is doubled along each axis, as BVlain does for its percolation energies."""
    labels, _ = ndimage.label(np.tile(mask, (2, 2, 2)), structure=np.ones((3, 3, 3), dtype=bool))
    home = labels[tuple(voxels.T)]
    joined = np.zeros(len(voxels), dtype=bool)
    for shift in itertools.product((0, 1), repeat=3):
        if any(shift):
            joined |= labels[tuple((voxels + np.array(shift) * mask.shape).T)] == home
    return joined & (home > 0)


def _merged(points: Sequence[np.ndarray], lattice: Lattice) -> np.ndarray:
    """Symmetry images of a grid minimum, those within MERGE_DISTANCE of each other replaced by their centre: a
    minimum the grid put 0.2 Å off a special position gives the special position, not a ring of images."""
    groups: list[list[np.ndarray]] = []
    for p in points:
        for g in groups:
            if lattice.get_all_distances([p], [g[0]])[0, 0] < MERGE_DISTANCE:
                shift = p - g[0]
                g.append(g[0] + shift - np.round(shift))  # the image next to the group's first point
                break
        else:
            groups.append([np.asarray(p, dtype=float)])
    return np.array([np.mod(np.mean(g, axis=0), 1.0) for g in groups])


# --- Supercell and configurations ---

def _repeat_axis(lattice: Lattice, channel_uvw: Sequence[int] | None) -> int:
    """The lattice vector to repeat: one the channel direction has a component of +-1 along (so m repeats give m
    channel repeats), the shortest such; without a channel direction, the shortest vector."""
    candidates = [i for i in range(3) if channel_uvw is not None and abs(channel_uvw[i]) == 1] or [0, 1, 2]
    return min(candidates, key=lambda i: lattice.abc[i])


def _supercell_positions(orbits: list[np.ndarray], axis: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Every orbit position in an m-fold repeat along `axis` (fractional, supercell), and its orbit index."""
    points, labels = [], []
    for k, orbit in enumerate(orbits):
        for t in range(m):
            moved = orbit.copy()
            moved[:, axis] = (moved[:, axis] + t) / m
            points.append(moved)
            labels += [k] * len(orbit)
    return np.concatenate(points), np.array(labels)


def place_ions(lattice: Lattice, positions: np.ndarray, orbit: np.ndarray, energies: Sequence[float], n: int,
               start: int, min_separation: float, occupied: np.ndarray | None = None) -> list[int] | None:
    """Indices of `n` positions: the first of orbit `start`, then each time the lowest-energy position at least
    `min_separation` from every chosen one and from `occupied` (ions already in the host), ties to the farthest.
    `orbit[i]` is position i's orbit, `energies[k]` orbit k's BVSE energy. None when fewer than `n` fit."""
    dist = lattice.get_all_distances(positions, positions)
    free = np.ones(len(positions), dtype=bool)
    if occupied is not None and len(occupied):
        free &= lattice.get_all_distances(positions, occupied).min(axis=1) >= min_separation
    first = next((i for i in np.flatnonzero(orbit == start) if free[i]), None)
    if first is None:
        return None
    chosen = [int(first)]
    energy = np.asarray(energies)[orbit]
    while len(chosen) < n:
        gap = dist[:, chosen].min(axis=1)
        ok = np.flatnonzero(free & (gap >= min_separation))
        if not len(ok):
            return None
        chosen.append(int(min(ok, key=lambda i: (energy[i], -round(gap[i], 2)))))
    return chosen


def _site_limit(lattice: Lattice, positions: np.ndarray, orbit: np.ndarray, energies: Sequence[float],
                min_separation: float, occupied: np.ndarray) -> int:
    """Ions the greedy placement fits in the cell from its best starting orbit (an estimate, not the densest
    packing)."""
    n = 0
    while n < len(positions) and any(place_ions(lattice, positions, orbit, energies, n + 1, k, min_separation, occupied)
                                     for k in range(len(energies))):
        n += 1
    return n


def ion_counts(max_ions: int, levels: int) -> list[int]:
    """`levels` ion counts evenly spaced up to `max_ions` (e.g. 4, 2 -> [2, 4]); fewer when max_ions is small."""
    return sorted({max(1, round(j * max_ions / levels)) for j in range(1, min(levels, max_ions) + 1)})


# --- The working-ion metal ---

def metal_structure(symbol: str) -> Structure:
    """The working-ion metal in its room-temperature structure (hcp Mg, Zn; fcc Ca, Al), primitive cell."""
    if symbol not in METALS:
        raise InsertionError(f"no metal reference structure for {symbol}; known: {', '.join(METALS)}")
    kind, a, c = METALS[symbol]
    if kind == "hcp":
        return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(a, c), [symbol], [[1 / 3, 2 / 3, 0.25]])
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [symbol], [[0, 0, 0]]).get_primitive_structure()


_METALS: dict[tuple, tuple[ComputedEntry, MetalReference]] = {}


def metal_reference(potential: Potential, symbol: str, fmax: float, steps: int) -> tuple[ComputedEntry, MetalReference]:
    """The relaxed metal's entry, once per process per (model, ion, settings)."""
    key = (potential.name, potential.version, symbol, fmax, steps)
    if key not in _METALS:
        metal = metal_structure(symbol)
        result = relax(metal, potential, RelaxSettings(fmax=fmax, steps=steps))
        if result.status not in ("converged", "unconverged") or result.final_energy_per_atom is None:
            raise InsertionError(f"the {symbol} metal reference did not relax: {result.status} {result.reason}")
        kind, a, c = METALS[symbol]
        record = MetalReference(prototype=f"{kind} {symbol}, a={a}" + (f", c={c}" if c else "") + " Å (relaxed)",
                                energy_per_atom=result.final_energy_per_atom, status=result.status,
                                steps=result.steps, volume_per_atom=result.structure.volume / len(result.structure))
        _METALS[key] = (ComputedEntry(symbol, result.final_energy_per_atom, entry_id=f"{symbol} metal"), record)
    return _METALS[key]


# --- The electrode ---

def entry_id(n_ions: int, symbol: str) -> str:
    """An id emmet-core accepts (its MPID rules) that says what the entry is: 'ins-2-Mg', two Mg in the cell."""
    return f"ins-{n_ions}-{symbol}"


def build_electrode(entries: Sequence[ComputedEntry], working_ion_entry: ComputedEntry) -> InsertionElectrodeDoc:
    """emmet-core's insertion electrode from topotactic entries (empty host included) and the metal's entry.

    Every entry needs `data['material_id']` (an id emmet-core accepts, see `entry_id`); `data['decomposition_energy']`
    (E_hull, eV/atom) fills the charged and discharged stabilities when every entry has it. Voltage is
    ((E_charged - E_discharged) / n + E_metal) / z per ion transferred (z from pymatgen: Mg 2, Al 3); capacities
    and energies are per mass and volume of the discharged state."""
    doc = InsertionElectrodeDoc.from_entries(list(entries), working_ion_entry)
    if doc is None:
        raise InsertionError("fewer than two stable states along the insertion path: no voltage step")
    return doc


def hull_stabilities(entries: Sequence[ComputedEntry], chemsys: str,
                     references: Sequence[PDEntry]) -> tuple[list[float], ReferenceHull]:
    """E_hull (eV/atom) of each entry against the reference hull of `chemsys` with all `entries` added, so a state
    is judged against known compounds and the other states of its own path. Formation energies use the MP
    elemental references (CHGNet energies are on MP2020's scale)."""
    hull = ReferenceHull(chemsys, references)
    points = [reference_entry(e.composition.formula, formation_energy_per_atom(e.composition, e.energy_per_atom),
                              e.entry_id) for e in entries]
    diagram = hull.with_entries(points)
    return [float(diagram.get_e_above_hull(p)) for p in points], hull


# --- The whole path for one framework and one ion ---

def insert(host: Structure, ion: str, potential: Potential, settings: InsertionSettings | None = None, *,
           channel_uvw: Sequence[int] | None = None, references: Sequence[PDEntry] = (),
           host_energy_per_atom: float | None = None) -> IonInsertion:
    """Sites, configurations, relaxations and the electrode for `ion` in `host` (a relaxed framework).

    channel_uvw: the channel direction in `host`'s cell (the tunnels stage's `channel_axis.uvw`): supercells
    repeat along it. references: known compounds as formation-energy PDEntries (`registry.science.hull.reference_entry`).
    host_energy_per_atom: the host's energy when it was already relaxed with this potential (the relax stage's):
    it is then not relaxed again. Never raises for a framework that cannot take the ion: the result is `failed`
    with the reason.
    """
    settings = settings or InsertionSettings()
    species = working_ion(ion)
    out = IonInsertion(ion=str(species), settings=settings, model=f"{potential.name} [{potential.version}]")
    start = time.perf_counter()
    try:
        _insert(host, species, potential, settings, channel_uvw, references, host_energy_per_atom, out)
    except InsertionError as exc:
        out.state, out.error = "failed", str(exc)
    except Exception as exc:  # a library broke on this framework: its reason, not the end of the stage
        out.state, out.error = "failed", f"insertion broke: {type(exc).__name__}: {exc}"
    out.wall_s = round(time.perf_counter() - start, 3)
    return out


def _insert(host: Structure, species: Species, potential: Potential, settings: InsertionSettings,
            channel_uvw: Sequence[int] | None, references: Sequence[PDEntry], host_energy_per_atom: float | None,
            out: IonInsertion) -> None:
    symbol, charge = species.symbol, int(species.oxi_state)
    try:
        decorated, out.oxidation_state_source = _oxidation_states(host)
    except Exception as exc:  # ChannelAnalysisError
        raise InsertionError(f"no oxidation states: {exc}") from None
    out.reducible = [m for m in reducible_metals(decorated) if m.electrons > 0]
    out.electrons_per_cell = round(sum(m.electrons for m in out.reducible), 4)
    if not out.reducible:
        raise InsertionError(f"no reducible transition metal in {host.composition.reduced_formula} "
                             f"(oxidation states: {out.oxidation_state_source})")

    sites, orbits = find_sites(host, symbol, max_energy=settings.max_energy, resolution=settings.resolution)
    out.sites_found = len(sites)
    out.sites, orbits = sites[: settings.max_sites], orbits[: settings.max_sites]
    out.sites_skipped = len(sites) - len(out.sites)
    energies = [s.bvse_energy for s in out.sites]

    axis = _repeat_axis(host.lattice, channel_uvw)
    m, best = 1, None
    while len(host) * m <= settings.max_atoms:
        cell = host.copy()
        cell.make_supercell([m if i == axis else 1 for i in range(3)])
        positions, orbit = _supercell_positions(orbits, axis, m)
        occupied = np.array([s.frac_coords for s in cell if s.specie.symbol == symbol]).reshape(-1, 3)
        e_limit = int(np.floor(out.electrons_per_cell * m / charge + 1e-6))
        s_limit = _site_limit(cell.lattice, positions, orbit, energies, settings.min_separation, occupied)
        best = (m, cell, positions, orbit, occupied, e_limit, s_limit)
        if min(e_limit, s_limit) >= settings.max_levels:
            break
        m += 1
    if best is None:
        raise InsertionError(f"the host has {len(host)} atoms, more than max_atoms={settings.max_atoms}")
    m, cell, positions, orbit, occupied, out.electron_limit, out.site_limit = best
    out.supercell = tuple(m if i == axis else 1 for i in range(3))
    out.max_ions = min(out.electron_limit, out.site_limit)
    if out.max_ions < 1:
        why = (f"the transition metals take {out.electrons_per_cell * m:g} electrons in {len(cell)} atoms, less than "
               f"one {species}" if out.electron_limit < 1 else
               f"no site is free at {settings.min_separation} Å from the ions already there")
        raise InsertionError(f"no ion fits within max_atoms={settings.max_atoms}: {why}")
    out.levels = ion_counts(out.max_ions, settings.max_levels)
    out.levels_skipped = out.max_ions - len(out.levels)

    configurations: list[tuple[int, list[int]]] = []
    for n in out.levels:
        found: list[list[int]] = []
        for k in range(len(orbits)):
            chosen = place_ions(cell.lattice, positions, orbit, energies, n, k, settings.min_separation, occupied)
            if chosen is not None and sorted(chosen) not in [sorted(c) for c in found]:
                found.append(chosen)
        configurations += [(n, c) for c in found[: settings.max_configurations]]
        out.configurations_skipped += max(0, len(found) - settings.max_configurations)

    structures = [] if host_energy_per_atom is not None else [cell]
    for _, chosen in configurations:
        s = cell.copy()
        for i in chosen:
            s.append(symbol, positions[i])
        structures.append(s)
    results = relax_batch(structures, potential, RelaxSettings(fmax=settings.fmax, steps=settings.steps),
                          batch_size=max(1, len(structures)))
    if host_energy_per_atom is not None:
        results.insert(0, RelaxResult("converged", "relaxed by the relax stage with this potential", cell,
                                      host_energy_per_atom, host_energy_per_atom))
    out.relaxations = [_record(0, [], results[0])] + [
        _record(n, [int(orbit[i]) for i in chosen], r) for (n, chosen), r in zip(configurations, results[1:], strict=True)]
    if out.relaxations[0].energy_per_atom is None:
        raise InsertionError(f"the host did not relax: {results[0].status} {results[0].reason}")

    kept: dict[int, int] = {}
    for i, rec in enumerate(out.relaxations):
        if rec.energy_per_atom is not None and (rec.n_ions not in kept or
                                                rec.energy_per_atom < out.relaxations[kept[rec.n_ions]].energy_per_atom):
            kept[rec.n_ions] = i
    if len(kept) < 2:
        reasons = "; ".join(f"{r.n_ions} ions: {r.status} {r.reason or ''}".strip() for r in out.relaxations[1:])
        raise InsertionError(f"no intercalated configuration relaxed ({reasons or 'none placed'})")
    entries = []
    for n, i in sorted(kept.items()):
        out.relaxations[i].kept = True
        result = results[i]
        entries.append(ComputedStructureEntry(result.structure, result.final_energy_per_atom * len(result.structure),
                                              entry_id=entry_id(n, symbol), data={"material_id": entry_id(n, symbol)}))

    chemsys = "-".join(sorted({el.symbol for el in host.composition.elements} | {symbol}))
    try:
        e_hull, hull = hull_stabilities(entries, chemsys, references)
        for entry, e, (_, i) in zip(entries, e_hull, sorted(kept.items()), strict=True):
            entry.data["decomposition_energy"] = e
            out.relaxations[i].e_above_hull = round(e, 6)
        out.n_references = hull.n_references
        out.stability_reference = (f"registry reference hull of {chemsys} ({hull.n_references} known compounds, "
                                   f"{REFERENCE_NAME}) with this path's states added")
    except Exception as exc:  # no elemental reference for an element, or a degenerate diagram
        out.stability_error = f"no E_hull: {exc}"
    charged, discharged = entries[0], entries[-1]
    try:
        out.conversion = conversion(
            charged.composition, formation_energy_per_atom(charged.composition, charged.energy_per_atom),
            discharged.composition, formation_energy_per_atom(discharged.composition, discharged.energy_per_atom),
            symbol, charge, references)
    except Exception as exc:  # as for E_hull: an element without a reference, a degenerate diagram
        out.conversion_error = f"no conversion reaction: {type(exc).__name__}: {exc}"

    metal, out.working_ion_reference = metal_reference(potential, symbol, settings.fmax, settings.steps)
    out.electrode = build_electrode(entries, metal)


def _record(n: int, sites: list[int], result: RelaxResult) -> Relaxation:
    ok = result.status in ("converged", "unconverged")
    return Relaxation(n_ions=n, sites=sites, status=result.status, reason=result.reason, steps=result.steps,
                      energy_per_atom=result.final_energy_per_atom if ok else None,
                      volume_change=result.volume_change if ok else None)
