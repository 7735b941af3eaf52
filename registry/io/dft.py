"""DFT validation I/O: VASP inputs out, finished calculations in, each tied to its registry structure.

Inputs use the Materials Project input sets (MPRelaxSet, then MPStaticSet), so the energies that come back can be
corrected with MP2020 and compared with MP's. No POTCAR is written (they are licensed): the manifest records the
POTCAR symbols and functional instead, and each folder gets pymatgen's POTCAR.spec.

Results are read from vasprun.xml (pymatgen's `Vasprun`) or from JSON holding ComputedEntry /
ComputedStructureEntry dicts or task documents (atomate2/emmet `TaskDoc`, with `entry` and `output`). A result is
linked to a registry id by, in order: the export manifest of the tree it sits in, a `registry_id` in the entry's
`data`, or a StructureMatcher match against the registry's structures of the same formula.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson import json_util
from emmet.core.vasp.calc_types.utils import task_type
from monty.io import zopen
from monty.json import jsanitize
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymongo import UpdateOne

from registry import __version__
from registry.errors import RegistryError
from registry.io.decoding import check_modules, decode
from registry.io.readers import MAX_FILE_BYTES
from schemas.base import to_mongo
from schemas.dft import CalcKind, DftDoc, DftLink, DftSource, LinkMethod
from schemas.stage import State

if TYPE_CHECKING:
    from registry.db.client import Registry

MANIFEST = "manifest.json"
INPUT_SETS = {"relax": "MPRelaxSet", "static": "MPStaticSet"}
EXPORT_COLLECTIONS = ("candidates", "relaxed", "structures")
DEFAULT_QUERIES: dict[str, dict[str, Any]] = {"candidates": {"passed": True}, "relaxed": {"state": "successful"},
                                              "structures": {}}
ENTRY_CLASSES = ("ComputedEntry", "ComputedStructureEntry")
INCAR_KEYS = ("ENCUT", "ISPIN", "LDAU", "ISMEAR", "SIGMA", "NSW", "IBRION", "ISIF", "EDIFF", "EDIFFG", "NELM", "ALGO")
# VASP's GGA = PE set explicitly is the same PBE functional as the POTCAR default (GGA = --) that MP runs use;
# pymatgen names them PBE and GGA, and MP2020 accepts only the latter.
RUN_TYPE_ALIASES = {"PBE": "GGA", "PBE+U": "GGA+U"}


# ---------------------------------------------------------------------------------------------- export


@dataclass
class ExportItem:
    registry_id: str
    formula: str
    structure: Structure
    collection: str = "relaxed"


@dataclass
class Selection:
    """What to export, what was asked for (recorded in the manifest), and ids left out with the reason."""

    items: list[ExportItem]
    asked: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class ExportReport:
    out: Path
    written: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # registry_id -> reason


def select_for_export(reg: Registry, collection: str = "candidates", query: dict[str, Any] | None = None,
                      set_name: str | None = None) -> Selection:
    """Structures to compute. Candidates (by query, or the latest version of a curated set) are exported with
    their ML-relaxed structure from `relaxed`: the DFT relaxation then starts where the ML one ended."""
    if collection not in EXPORT_COLLECTIONS:
        raise RegistryError(f"cannot export from {collection!r}; choose one of {', '.join(EXPORT_COLLECTIONS)}")
    fields = ["registry_id", "formula_pretty", "structure", "state"]
    ids: list[str] | None = None
    if set_name is not None:
        from registry.output.sets import get_set, members

        candidate_set = get_set(reg, set_name)
        ids = sorted({m.registry_id for m in members(candidate_set)})
        asked: dict[str, Any] = {"set": set_name, "set_version": candidate_set.version}
    else:
        query = DEFAULT_QUERIES[collection] if query is None else query
        asked = {"collection": collection, "query": json.loads(json_util.dumps(query))}
        if collection == "candidates":
            ids = sorted(set(reg.collection("candidates").distinct("registry_id", query)))
    if ids is not None:
        source = "relaxed"
        docs = {d["registry_id"]: d for d in reg.find_among("registry_id", ids, source, fields)}
    else:
        source = collection
        docs = {d["registry_id"]: d for d in reg.find(query, collection=source, fields=fields)}
        ids = sorted(docs)
    selection = Selection([], asked)
    for rid in ids:
        doc = docs.get(rid)
        if doc is None or not doc.get("structure") or doc.get("state", "successful") != "successful":
            selection.skipped[rid] = f"no successful structure in {source}"
            continue
        selection.items.append(ExportItem(rid, doc["formula_pretty"], Structure.from_dict(doc["structure"]), source))
    return selection


def export_inputs(reg: Registry, selection: Selection, out: Path, force: bool = False) -> ExportReport:
    """Write `<registry_id>_<formula>/{relax,static}/` with INCAR, KPOINTS, POSCAR and POTCAR.spec, and
    `manifest.json`. With `force`, writes into a non-empty folder and merges the manifest (same folders replaced)."""
    from pymatgen.io.vasp.sets import MPRelaxSet, MPStaticSet

    out = Path(out)
    manifest_path = out / MANIFEST
    if out.exists() and any(out.iterdir()) and not force:
        raise RegistryError(f"{out} is not empty; use --force to write into it (the manifest is merged)")
    previous: list[dict[str, Any]] = []
    if manifest_path.is_file():
        try:
            previous = read_manifest(manifest_path)["structures"]
        except ValueError as exc:  # JSONDecodeError included
            raise RegistryError(f"cannot merge into {manifest_path}: {exc}") from None
    items = selection.items
    origins = {d["registry_id"]: d for d in reg.find_among("registry_id", [i.registry_id for i in items],
                                                           fields=["registry_id", "content_hash", "origin"])}
    report = ExportReport(out, skipped=dict(selection.skipped))
    entries: list[dict[str, Any]] = []
    for item in items:
        folder = f"{item.registry_id}_{item.formula}"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                relax = MPRelaxSet(item.structure)
                relax.write_input(str(out / folder / "relax"), potcar_spec=True)
                MPStaticSet(item.structure).write_input(str(out / folder / "static"), potcar_spec=True)
        except Exception as exc:  # an element without an MP POTCAR, a structure pymatgen refuses
            report.skipped[item.registry_id] = f"cannot write VASP inputs: {type(exc).__name__}: {exc}"
            continue
        incar = relax.incar
        origin = origins.get(item.registry_id, {})
        entries.append({
            "directory": folder,
            "registry_id": item.registry_id,
            "formula_pretty": item.formula,
            "structure_from": item.collection,
            "poscar_sha256": hashlib.sha256((out / folder / "relax" / "POSCAR").read_bytes()).hexdigest(),
            "structure_content_hash": origin.get("content_hash"),
            "origin": {k: origin.get("origin", {}).get(k) for k in ("kind", "source", "source_id", "run_id")},
            "potcar_symbols": list(relax.potcar_symbols),
            "potcar_functional": str(relax.potcar_functional),
            "hubbard_u": dict(zip(relax.poscar.site_symbols, incar["LDAUU"], strict=True)) if incar.get("LDAU") else {},
            "selection": selection.asked,
            "warnings": sorted({str(w.message)[:200] for w in caught}),
        })
        report.written.append(folder)
    written = set(report.written)
    entries = [e for e in previous if e.get("directory") not in written] + entries
    manifest = {
        "format": 1,
        "created": datetime.now(UTC).isoformat(),
        "registry_version": __version__,
        "pymatgen_version": version("pymatgen"),
        "database": reg.database,
        "input_sets": INPUT_SETS,
        "static_run": "run relax/ first, then copy relax/CONTCAR to static/POSCAR (MP's relax-then-static order)",
        "potcars": "not written: generate them from potcar_symbols (or POTCAR.spec) with your licensed POTCARs",
        "structures": entries,
    }
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return report


def read_manifest(path: Path) -> dict[str, Any]:
    manifest = json.loads(Path(path).read_text())
    if not isinstance(manifest, dict) or not isinstance(manifest.get("structures"), list):
        raise ValueError(f"{path} is not a registry export manifest (no 'structures' list)")
    return manifest


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class DftResult:
    """One calculation as read, before linking. `error` set: the calculation failed or could not be read."""

    source: DftSource
    entry: ComputedEntry | None = None
    error: str | None = None
    converged_electronic: bool | None = None
    converged_ionic: bool | None = None
    band_gap: float | None = None
    is_gap_direct: bool | None = None
    calc_kind: CalcKind = "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def dft_id(self) -> str:
        """From the path and, in multi-result files, the entry id or position: re-reading finds the same id."""
        key = self.source.entry_id if self.source.index is not None and self.source.entry_id else self.source.index
        digest = hashlib.sha256(f"{self.source.path}\x1f{'' if key is None else key}".encode()).hexdigest()
        return f"dft-{digest[:16]}"


class NoResults(ValueError):
    """A file that holds no DFT calculation (e.g. custodian.json): skipped, not recorded."""


def result_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.startswith("vasprun") and ".xml" in name:
        return "vasprun"
    if name != MANIFEST and (name.endswith(".json") or name.endswith(".json.gz")):
        return "json"
    return None


def iter_result_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files to read, folders expanded to their vasprun*.xml* and *.json* files (sorted, for reproducible runs)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and result_kind(p))
        else:
            yield path


def read_results(path: Path) -> list[DftResult]:
    """Every calculation in one file. Raises NoResults for a file that holds none; a calculation that cannot be
    read becomes a failed result, never an exception."""
    path = Path(path).resolve()
    kind = result_kind(path)
    if kind and (size := path.stat().st_size) > MAX_FILE_BYTES:
        source = DftSource(path=str(path), kind="vasprun" if kind == "vasprun" else "entry")
        return [DftResult(source, error=f"file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit")]
    if kind == "vasprun":
        return [read_vasprun(path)]
    if kind == "json":
        return read_json(path)
    raise NoResults(f"{path.name}: not a vasprun.xml or a JSON file")


def read_vasprun(path: Path) -> DftResult:
    from pymatgen.io.vasp import Vasprun

    source = DftSource(path=str(path), kind="vasprun")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = Vasprun(str(path), parse_dos=False, parse_potcar_file=False)
            entry = run.get_computed_entry(inc_structure=True)
            converged_e, converged_i = run.converged_electronic, run.converged_ionic
    except Exception as exc:  # truncated XML of a killed run, a file that is not a vasprun
        return DftResult(source, error=f"cannot parse {path.name}: {type(exc).__name__}: {str(exc)[:200]}")
    source.entry_id = entry.entry_id
    params = run.parameters
    result = DftResult(source, entry=entry, converged_electronic=converged_e, converged_ionic=converged_i,
                       calc_kind=_task_kind(str(task_type({"incar": params}).value)))
    try:
        gap, _cbm, _vbm, direct = run.eigenvalue_band_properties
        result.band_gap, result.is_gap_direct = float(gap), bool(direct)
    except Exception:  # noqa: S110 - no eigenvalues (e.g. a run without them): the result simply has no gap
        pass
    last_steps = run.ionic_steps[-1]["electronic_steps"] if run.ionic_steps else []
    result.metadata = jsanitize({
        "vasp_version": run.vasp_version, "generator": run.generator,
        "incar": {k: params.get(k) for k in INCAR_KEYS if k in params},
        "kpoints": [list(k) for k in run.kpoints.kpts] if run.kpoints else None,
        "n_ionic_steps": len(run.ionic_steps), "n_electronic_steps_final": len(last_steps),
    })
    if not converged_e:
        result.error = (f"electronic SCF not converged in the final ionic step ({len(last_steps)} steps, "
                        f"NELM={params.get('NELM')})")
    elif not converged_i:
        result.error = f"ionic relaxation not converged ({len(run.ionic_steps)} steps, NSW={params.get('NSW')})"
    return result


def read_json(path: Path) -> list[DftResult]:
    try:
        with zopen(path, mode="rt", encoding="utf-8") as fh:
            text = fh.read(MAX_FILE_BYTES + 1)  # bounded: a gzip bomb stops at the limit
        if len(text) > MAX_FILE_BYTES:
            raise ValueError(f"decompressed JSON is over the {MAX_FILE_BYTES // 2**20} MiB limit")
        data = json.loads(text)
    except Exception as exc:  # truncated, not JSON, or too big
        return [DftResult(DftSource(path=str(path), kind="entry"),
                          error=f"cannot read JSON: {type(exc).__name__}: {str(exc)[:200]}")]
    objects = data if isinstance(data, list) else [data]
    results = [r for i, obj in enumerate(objects)
               if (r := _json_result(obj, path, i if isinstance(data, list) else None)) is not None]
    if not results:
        raise NoResults(f"{path.name}: holds no ComputedEntry/ComputedStructureEntry or task document")
    return results


def _json_result(obj: Any, path: Path, index: int | None) -> DftResult | None:
    if not isinstance(obj, dict):
        return None
    if obj.get("@class") in ENTRY_CLASSES:
        task, entry_dict = None, obj
    elif isinstance(obj.get("entry"), dict) and obj["entry"].get("@class") in ENTRY_CLASSES:
        task, entry_dict = obj, obj["entry"]
    else:
        return None
    source = DftSource(path=str(path), kind="task" if task else "entry", index=index,
                       entry_id=str(entry_dict["entry_id"]) if entry_dict.get("entry_id") is not None else None,
                       task_id=str(task["task_id"]) if task and task.get("task_id") is not None else None)
    try:
        entry = decode(entry_dict)
        if task is not None and not isinstance(entry, ComputedStructureEntry):
            structure = (task.get("output") or {}).get("structure") or task.get("structure")
            if structure:
                check_modules(structure)  # Structure.from_dict decodes site properties with MontyDecoder
                entry = ComputedStructureEntry(Structure.from_dict(structure), entry.uncorrected_energy,
                                               energy_adjustments=entry.energy_adjustments,
                                               parameters=entry.parameters, data=entry.data, entry_id=entry.entry_id)
    except Exception as exc:
        return DftResult(source, error=f"cannot decode the entry: {type(exc).__name__}: {str(exc)[:200]}")
    if not math.isfinite(entry.uncorrected_energy):
        return DftResult(source, error=f"energy is not a finite number ({entry.uncorrected_energy})")
    data = entry.data or {}
    if task is not None:
        output = task.get("output") or {}
        state, converged = task.get("state"), None
        gap, kind = output.get("bandgap"), _task_kind(str(task.get("task_type") or ""))
    else:
        state, converged = data.get("state"), data.get("converged")
        gap, kind = data.get("band_gap"), _task_kind(str(data.get("task_type") or ""))
    result = DftResult(source, entry=entry, band_gap=float(gap) if gap is not None else None, calc_kind=kind,
                       converged_electronic=converged, converged_ionic=converged,
                       metadata=jsanitize({k: task[k] for k in ("task_type", "calc_type", "state", "completed_at")
                                           if k in task}) if task else {})
    if state not in (None, "successful"):
        result.error = f"the workflow marked this calculation {state!r}"
    elif converged is False:
        result.error = "the source marks this calculation unconverged"
    return result


def _task_kind(task: str) -> CalcKind:
    """Static or relaxation, from an emmet task type ("Static", "Structure Optimization", ...; emmet's
    `task_type` reads it from the INCAR of a vasprun). Self-consistent runs at fixed geometry (static, dielectric,
    DFPT) give a usable total energy; non-self-consistent ones (NSCF) do not, and stay unknown."""
    lower = task.lower()
    if "nscf" in lower:
        return "unknown"
    if "static" in lower or lower.startswith(("dielectric", "dfpt")):
        return "static"
    return "relax" if "optimization" in lower or "relax" in lower else "unknown"


def functional(run_type: str | None, hubbards: dict[str, float]) -> str | None:
    """GGA or GGA+U for PBE runs (+U when any U is non-zero), else the run type as reported."""
    if run_type is None:
        return None
    base = RUN_TYPE_ALIASES.get(run_type, run_type).removesuffix("+U")
    return f"{base}+U" if any(float(u) for u in hubbards.values()) else base


# ---------------------------------------------------------------------------------------------- linking


class Linker:
    """Finds the registry id a result belongs to. Always maps to the representative of the structure's
    validated group, where the ML values are stored."""

    def __init__(self, reg: Registry, matcher: StructureMatcher | None = None):
        self.reg = reg
        self.matcher = matcher or StructureMatcher()
        self._manifests: dict[Path, tuple[Path, dict[str, dict]] | None] = {}
        self._by_formula: dict[str, tuple[list[tuple[str, Structure]], list[tuple[str, Structure]]]] = {}

    def link(self, result: DftResult) -> tuple[str | None, DftLink, CalcKind | None]:
        """(registry id or None, the link and its reason, the calc kind the export folder implies)."""
        notes: list[str] = []
        formula = result.entry.composition.reduced_formula if result.entry else None
        found = self._manifest_entry(Path(result.source.path))
        kind_hint: CalcKind | None = None
        if found is not None:
            manifest_path, entry, sub = found
            kind_hint = sub if sub in ("relax", "static") else None  # type: ignore[assignment]
            rid, why = self._checked(entry["registry_id"], formula, f"export manifest {manifest_path}")
            if rid:
                return rid, DftLink(method=LinkMethod.manifest, reason=why, manifest=str(manifest_path)), kind_hint
            notes.append(why)
        named = (result.entry.data or {}).get("registry_id") if result.entry else None
        if named:
            rid, why = self._checked(str(named), formula, "the entry's data")
            if rid:
                return rid, DftLink(method=LinkMethod.data, reason=why), kind_hint
            notes.append(why)
        structure = getattr(result.entry, "structure", None)
        if structure is None:
            notes.append("no structure to match" if result.entry else "nothing parsed to link by")
            return None, DftLink(reason="; ".join(notes)), kind_hint
        rid, rms, compared = self._match(structure)
        if rid:
            return (self._representative(rid),
                    DftLink(method=LinkMethod.structure_match, rms=rms,
                            reason=f"matches {rid} (RMS {rms:.3f}) among {compared} {formula} structures"), kind_hint)
        notes.append(f"no registry structure of formula {formula} matches (compared {compared})")
        return None, DftLink(reason="; ".join(notes)), kind_hint

    def _manifest_entry(self, path: Path) -> tuple[Path, dict, str | None] | None:
        """The manifest above `path` and its entry for the export folder holding `path`, if any."""
        for parent in path.parents:
            if parent not in self._manifests:
                candidate = parent / MANIFEST
                try:
                    entries = {e["directory"]: e for e in read_manifest(candidate)["structures"]}
                    self._manifests[parent] = (candidate, entries)
                except (OSError, ValueError, KeyError, TypeError):
                    self._manifests[parent] = None
            found = self._manifests[parent]
            if found is None:
                continue
            parts = path.relative_to(parent).parts
            entry = found[1].get(parts[0]) if len(parts) > 1 else None
            if entry is not None:
                return found[0], entry, parts[1] if len(parts) > 2 else None
            return None
        return None

    def _checked(self, rid: str, formula: str | None, by: str) -> tuple[str | None, str]:
        doc = self.reg.collection("structures").find_one({"registry_id": rid}, {"formula_pretty": 1, "_id": 0})
        if doc is None:
            return None, f"{by} names {rid}, which is not in this registry"
        if formula is not None and doc["formula_pretty"] != formula:
            return None, f"{by} names {rid} ({doc['formula_pretty']}) but the calculation is {formula}"
        rep = self._representative(rid)
        return rep, f"{by} names {rid}" + (f" (in the group of {rep})" if rep != rid else "")

    def _representative(self, rid: str) -> str:
        doc = self.reg.collection("validated").find_one({"members": rid}, {"registry_id": 1, "_id": 0})
        return doc["registry_id"] if doc else rid

    def _candidates(self, formula: str) -> tuple[list[tuple[str, Structure]], list[tuple[str, Structure]]]:
        """(ML-relaxed structures, the registry's own structures) of one formula."""
        if formula not in self._by_formula:
            relaxed = self.reg.find({"formula_pretty": formula, "state": "successful"}, collection="relaxed",
                                    fields=["registry_id", "structure"])
            stored = self.reg.find({"formula_pretty": formula}, fields=["registry_id", "structure"])
            relaxed_structures, stored_structures = (
                [(d["registry_id"], Structure.from_dict(d["structure"])) for d in docs if d.get("structure")]
                for docs in (relaxed, stored))
            self._by_formula[formula] = (relaxed_structures, stored_structures)
        return self._by_formula[formula]

    def _match(self, structure: Structure) -> tuple[str | None, float | None, int]:
        """The closest match among the ML-relaxed structures (what an exported run started from), else among
        the registry's own structures; and how many structures were compared."""
        compared = 0
        for candidates in self._candidates(structure.composition.reduced_formula):
            best: tuple[str | None, float | None] = (None, None)
            for rid, other in candidates:
                rms = self.matcher.get_rms_dist(structure, other)
                if rms is not None and (best[1] is None or rms[0] < best[1]):
                    best = (rid, float(rms[0]))
            compared += len(candidates)
            if best[0] is not None:
                return best[0], best[1], compared
        return None, None, compared


# ---------------------------------------------------------------------------------------------- ingest


@dataclass
class DftIngestReport:
    """`read == ingested + updated + unchanged`; `failed` and `unlinked` count documents among those."""

    read: int = 0
    ingested: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    unlinked: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it holds no calculation
    reasons: dict[str, int] = field(default_factory=dict)  # failure reason -> count
    linked_by: dict[str, int] = field(default_factory=dict)


def to_document(result: DftResult, registry_id: str | None, link: DftLink, kind_hint: CalcKind | None = None,
                now: datetime | None = None) -> DftDoc:
    entry = result.entry
    body: dict[str, Any] = {
        "dft_id": result.dft_id, "registry_id": registry_id, "link": link, "source": result.source,
        "state": State.failed if result.error else State.successful, "error": result.error,
        "calc_kind": result.calc_kind if result.calc_kind != "unknown" else (kind_hint or "unknown"),
        "converged_electronic": result.converged_electronic, "converged_ionic": result.converged_ionic,
        "band_gap": result.band_gap, "is_gap_direct": result.is_gap_direct, "metadata": result.metadata,
    }
    if entry is not None:
        params = entry.parameters or {}
        hubbards = {k: float(v) for k, v in (params.get("hubbards") or {}).items()}
        run_type = params.get("run_type")
        name = functional(run_type, hubbards)
        if run_type in RUN_TYPE_ALIASES:
            entry.parameters = {**params, "run_type": name}
        comp = entry.composition
        structure = getattr(entry, "structure", None)
        body.update({
            "formula_pretty": comp.reduced_formula, "elements": sorted(e.symbol for e in comp.elements),
            "chemsys": "-".join(sorted(e.symbol for e in comp.elements)), "nsites": int(comp.num_atoms),
            "functional": name, "run_type": run_type, "hubbards": hubbards,
            "potcar_symbols": list(params.get("potcar_symbols") or []),
            "energy": float(entry.uncorrected_energy), "energy_per_atom": float(entry.uncorrected_energy_per_atom),
            "corrected_energy_per_atom": float(entry.energy_per_atom), "structure": structure,
            "entry": jsanitize(entry.as_dict(), strict=False),
        })
    doc = DftDoc(**body, content_hash="", last_updated=now or datetime.now(UTC))
    payload = doc.model_dump(mode="json", exclude={"content_hash", "last_updated"})
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return doc.model_copy(update={"content_hash": digest})


def ingest_results(reg: Registry, paths: Iterable[Path], linker: Linker | None = None) -> DftIngestReport:
    """Read, link and upsert every calculation under `paths`; unchanged documents keep their timestamp, so
    the comparison stage redoes only what changed."""
    reg.ensure_indexes(["dft"])
    linker = linker or Linker(reg)
    collection = reg.collection("dft")
    report = DftIngestReport()
    now = datetime.now(UTC)
    for path in iter_result_files(paths):
        try:
            results = read_results(path)
        except NoResults as exc:
            report.skipped[str(path)] = str(exc)
            continue
        docs = []
        for result in results:
            rid, link, hint = linker.link(result)
            docs.append(to_document(result, rid, link, hint, now))
        existing = {d["dft_id"]: d["content_hash"] for d in collection.find(
            {"dft_id": {"$in": [d.dft_id for d in docs]}}, {"dft_id": 1, "content_hash": 1, "_id": 0})}
        ops = []
        for doc in docs:
            report.read += 1
            if doc.state == State.failed:
                report.failed += 1
                kind = (doc.error or "unknown").split(":")[0][:80]
                report.reasons[kind] = report.reasons.get(kind, 0) + 1
            if doc.registry_id is None:
                report.unlinked += 1
            else:
                method = doc.link.method.value if doc.link.method else "?"
                report.linked_by[method] = report.linked_by.get(method, 0) + 1
            if existing.get(doc.dft_id) == doc.content_hash:
                report.unchanged += 1
                continue
            report.updated += doc.dft_id in existing
            report.ingested += doc.dft_id not in existing
            ops.append(UpdateOne({"dft_id": doc.dft_id}, {"$set": to_mongo(doc)}, upsert=True))
        if ops:
            collection.bulk_write(ops, ordered=False)
    return report
