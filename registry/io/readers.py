"""Readers turn input files (and the MP API) into `Record`s: a parsed structure with its origin, or a reason.

A reader never raises for one bad record or file: it yields a reject and goes on, so the good files of the same
run are written. After `MAX_REJECTS_PER_FILE` rejects from one file, the rest of that file's rejects are counted
into one summary reject: a small compressed file of junk cannot fill the rejects collection.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymatgen.io.cif import CifFile, CifParser

from registry.io.decoding import check_modules, decode
from registry.io.records import Record
from registry.science.validity import MAX_SITES
from schemas.structure import Origin, OriginKind

MAX_FILE_BYTES = 256 * 2**20  # a single input file larger than this is refused, not read into memory
MAX_CIF_LINES = 20 * MAX_SITES  # room for displacement and bond loops; bounds the CIF lexer's work
MAX_EXPANDED_SITES = 4 * MAX_SITES  # atom sites x symmetry operations, before duplicates merge
STRUCTURE_SUFFIXES = (".cif", ".csv", ".json", ".json.gz")
MAX_REJECTS_PER_FILE = 100

# Column names (lower case) in CSV inputs that carry reference properties, mapped to the registry's names.
REFERENCE_COLUMNS = {
    "formation_energy_per_atom": "formation_energy_per_atom",
    "formation energy (ev/atom)": "formation_energy_per_atom",
    "e_above_hull": "e_above_hull",
    "energy_above_hull": "e_above_hull",
    "energy above hull (ev/atom)": "e_above_hull",
    "band_gap": "band_gap",
    "band gap (ev)": "band_gap",
    "band gap (ev/atom)": "band_gap",  # sic: the paper's CSV labels the gap per atom
    "spacegroup.number": "spacegroup_number",
    "pretty_formula": "formula",
}
ID_COLUMNS = ("material_id", "id", "name")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".json.gz" if name.endswith(".json.gz") else path.suffix.lower()


def _origin(kind: OriginKind, source: str, source_id: str, file: Path | None, row: int | None = None) -> Origin:
    return Origin(kind=kind, source=source, source_id=source_id, file=str(file) if file else None, row=row)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _cif_size_problem(text: str, parser: CifParser) -> str | None:
    """Why a CIF is too big to parse, judged before pymatgen's site merging (quadratic in the sites that the
    symmetry operations generate): a 10^6-atom cell, or a few atoms times many operations, would hang it."""
    for name, block in CifFile.from_str(text).data.items():
        rows = max((len(v) if isinstance(v, list) else 1 for k, v in block.data.items()
                    if k.lower() in ("_atom_site_fract_x", "_atom_site_cartn_x")), default=0)
        if rows > MAX_SITES:
            return f"CIF block {name!r} lists {rows} atom sites, more than the limit of {MAX_SITES}"
        try:
            ops = len(parser.get_symops(block))
        except Exception:  # an unreadable symmetry is parse_structures' error to report
            ops = 1
        if rows * ops > MAX_EXPANDED_SITES:
            return (f"CIF block {name!r} expands to up to {rows * ops} sites ({rows} atom sites x {ops} symmetry "
                    f"operations), more than the limit of {MAX_EXPANDED_SITES}")
    return None


def parse_cif(text: str) -> list[Structure]:
    """All structures in a CIF; raises ValueError with pymatgen's reason when none can be read, or when the CIF is
    too big to be a crystal this registry holds (checked before the costly parsing)."""
    lines = text.count("\n") + 1
    if lines > MAX_CIF_LINES:
        raise ValueError(f"CIF has {lines} lines, more than the {MAX_CIF_LINES} allowed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text)
            problem = _cif_size_problem(text, parser)
            structures = [] if problem else parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            detail = "; ".join(str(w.message) for w in caught[:2])
            reason = f"{exc or type(exc).__name__}{' (' + detail + ')' if detail else ''}"
            raise ValueError(f"unreadable CIF: {_shorten(reason)}") from None
    if problem:
        raise ValueError(problem)
    if not structures:
        raise ValueError("CIF holds no structure")
    return structures


def _shorten(text: str, limit: int = 400) -> str:
    """pymatgen's messages can list every site of a big CIF; a reason should fit on a line or two."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Input(NamedTuple):
    """One file to read: its name (the source id of its only record, the prefix of its others') and the dataset it
    belongs to (the default `origin.source`, so the same id in two datasets stays two records)."""

    path: Path
    name: str
    dataset: str


def dataset_name(path: Path) -> str:
    """The dataset a file given on its own belongs to: a CSV or JSON file is one (its stem); a CIF file, the folder
    it lies in (`a/sample.cif` and `b/sample.cif` are from datasets `a` and `b`)."""
    if _suffix(path) == ".cif":
        return path.resolve().parent.name or "cif"
    return path.name[: -len(_suffix(path))] if _suffix(path) else path.name


def iter_inputs(paths: Iterable[Path]) -> Iterator[Input]:
    """Files to read, folders expanded (sorted, so runs are reproducible). A folder given is the dataset of every
    file in it, each named by its stem after the folders between it and the folder given (`a/sample`, `b/sample`)."""
    for path in paths:
        if path.is_dir():
            dataset = path.resolve().name or "files"
            for file in sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p) in STRUCTURE_SUFFIXES):
                yield Input(file, file.relative_to(path).with_name(file.stem).as_posix(), dataset)
        else:
            yield Input(path, path.stem, dataset_name(path))


def iter_input_files(paths: Iterable[Path]) -> Iterator[Path]:
    return (inp.path for inp in iter_inputs(paths))


def read_path(path: Path, source: str | None = None, kind: OriginKind = OriginKind.mined,
              name: str | None = None) -> Iterator[Record]:
    """Records from one file, by its type. Unreadable files become one reject each. `name` (from `iter_inputs`;
    default the file's stem) is the source id of a file's only record, the prefix of its others'; `source`
    (default the file's dataset, `dataset_name`) is their `origin.source`."""
    suffix = _suffix(path)
    readers = {".cif": read_cif, ".csv": read_csv, ".json": read_json, ".json.gz": read_json}
    name = name or path.stem
    origin = _origin(kind, source or dataset_name(path), name, path)
    if suffix not in readers:
        yield Record.reject(origin, f"unknown input type {suffix or '(none)'}: expected a CIF, a CSV with a cif "
                            "column, JSON of structures or entries, or a folder of them")
        return
    try:
        size = path.stat().st_size
    except OSError as exc:
        yield Record.reject(origin, f"cannot read file: {exc.strerror or exc}")
        return
    if size > MAX_FILE_BYTES:
        yield Record.reject(origin, f"file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit")
        return
    try:
        yield from _capped(readers[suffix](path, source=origin.source, kind=kind, name=name), origin)
    except (OSError, UnicodeDecodeError) as exc:
        yield Record.reject(origin, f"cannot read file: {exc}")


def _capped(records: Iterator[Record], origin: Origin) -> Iterator[Record]:
    """Every structure, and the first `MAX_REJECTS_PER_FILE` rejects; then one reject that counts the rest."""
    more = 0
    rejected = 0
    for record in records:
        if record.structure is None:
            rejected += 1
            if rejected > MAX_REJECTS_PER_FILE:
                more += 1
                continue
        yield record
    if more:
        yield Record.reject(origin.model_copy(update={"source_id": f"{origin.source_id}:more-rejects"}),
                            f"{more} more rejects in this file, not kept one by one (the first "
                            f"{MAX_REJECTS_PER_FILE} are)")


def read_cif(path: Path, source: str = "cif", kind: OriginKind = OriginKind.mined,
             name: str | None = None) -> Iterator[Record]:
    name = name or path.stem
    text = path.read_text(errors="strict")
    try:
        structures = parse_cif(text)
    except ValueError as exc:
        yield Record.reject(_origin(kind, source, name, path), str(exc), raw=text)
        return
    for i, structure in enumerate(structures):
        source_id = name if len(structures) == 1 else f"{name}#{i}"
        yield Record(_origin(kind, source, source_id, path, i if len(structures) > 1 else None), structure)


def read_csv(path: Path, source: str = "csv", kind: OriginKind = OriginKind.mined,
             name: str | None = None) -> Iterator[Record]:
    """A CSV with a `cif` column (the MP-20 / CDVAE layout): ids and reference properties from other columns."""
    name = name or path.stem
    csv.field_size_limit(MAX_FILE_BYTES)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:  # bad bytes: that row's reject
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "cif" not in columns:
            yield Record.reject(_origin(kind, source, name, path),
                                f"CSV has no 'cif' column (columns: {', '.join(columns) or 'none'})")
            return
        id_column = next((columns[c] for c in ID_COLUMNS if c in columns), None)
        for row_number, row in enumerate(reader):
            source_id = (row.get(id_column) or "").strip() if id_column else ""
            if _undecodable(source_id):
                source_id = ""
            origin = _origin(kind, source, source_id or f"{name}:{row_number}", path, row_number)
            if any(_undecodable(v) for v in [*row.values(), *(row.get(None) or [])] if isinstance(v, str)):
                yield Record.reject(origin, f"row {row_number}: not UTF-8 text")
                continue
            text = row.get(columns["cif"]) or ""
            try:
                structure = parse_cif(text)[0]
            except ValueError as exc:
                yield Record.reject(origin, f"row {row_number}: {exc}", raw=text)
                continue
            reference: dict[str, Any] = {}
            for lower, column in columns.items():
                if lower in REFERENCE_COLUMNS:
                    value = row.get(column)
                    reference[REFERENCE_COLUMNS[lower]] = value if lower == "pretty_formula" else _number(value)
            yield Record(origin, structure, reference)


_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, as `errors="surrogateescape"` decodes them


def _undecodable(text: str) -> bool:
    return _ESCAPED.search(text) is not None


def _entry_record(obj: Any, origin: Origin) -> Record:
    """A Structure or ComputedStructureEntry (as object) to a Record; anything else is a reject."""
    if isinstance(obj, ComputedStructureEntry):
        entry_id = obj.entry_id or obj.data.get("material_id") or obj.data.get("task_id")
        if entry_id:
            origin = origin.model_copy(update={"source_id": str(entry_id)})
        reference = {"energy": obj.energy, "energy_per_atom": obj.energy_per_atom,
                     "uncorrected_energy_per_atom": obj.uncorrected_energy_per_atom, "correction": obj.correction,
                     **{k: v for k, v in obj.data.items() if isinstance(v, int | float | str)}}
        return Record(origin, obj.structure, reference)
    if isinstance(obj, Structure):
        return Record(origin, obj)
    if isinstance(obj, ComputedEntry):
        return Record.reject(origin, "a ComputedEntry has no structure; use ComputedStructureEntry")
    return Record.reject(origin, f"expected a pymatgen Structure or ComputedStructureEntry, got {type(obj).__name__}")


def read_json(path: Path, source: str = "json", kind: OriginKind = OriginKind.mined,
              name: str | None = None) -> Iterator[Record]:
    """JSON (optionally gzipped) of a pymatgen Structure, a ComputedStructureEntry, or a list of them."""
    name = name or path.stem
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(MAX_FILE_BYTES + 1)  # bounded: a gzip bomb stops at the limit
        except (OSError, EOFError) as exc:
            yield Record.reject(_origin(kind, source, name, path), f"not valid gzip: {exc}")
            return
        if len(raw) > MAX_FILE_BYTES:
            yield Record.reject(_origin(kind, source, name, path), "decompressed JSON is over the size limit")
            return
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the decoder allows
        yield Record.reject(_origin(kind, source, name, path), f"not valid JSON: {exc}",
                            raw=raw[:500].decode(errors="replace"))
        return
    items = data if isinstance(data, list) else [data]
    for i, item in enumerate(items):
        origin = _origin(kind, source, name if len(items) == 1 else f"{name}#{i}", path, i)
        if (sites := _site_count(item)) > MAX_SITES:  # refused before pymatgen builds them
            yield Record.reject(origin, f"item {i} has {sites} sites, more than the limit of {MAX_SITES}")
            continue
        try:
            check_modules(item)  # Structure.from_dict decodes site properties with MontyDecoder too
            obj = decode(item) if _is_pymatgen(item) else Structure.from_dict(item)
        except Exception as exc:  # a dict of the wrong shape raises KeyError, TypeError, ValueError, ...
            yield Record.reject(origin, f"item {i} is not a structure or entry: {type(exc).__name__}: {exc}",
                                raw=json.dumps(item)[:500])
            continue
        yield _entry_record(obj, origin)


def _site_count(item: Any) -> int:
    """Sites of a Structure dict, or of the structure of an entry dict."""
    if isinstance(item, dict) and isinstance(item.get("structure"), dict):
        item = item["structure"]
    sites = item.get("sites") if isinstance(item, dict) else None
    return len(sites) if isinstance(sites, list) else 0


def _is_pymatgen(item: Any) -> bool:
    """An MSONable pymatgen object (entry or structure) rather than a bare Structure dict."""
    return isinstance(item, dict) and str(item.get("@module", "")).startswith("pymatgen.")


class SummaryClient(Protocol):
    """What we use of `mp_api.client.MPRester`: `materials.summary.search(...)`."""

    materials: Any


MP_FIELDS = ["material_id", "structure", "formation_energy_per_atom", "band_gap", "energy_above_hull",
             "formula_pretty", "theoretical"]


def read_mp_api(client: SummaryClient, elements: list[str] | None = None, chemsys: list[str] | None = None,
                ) -> Iterator[Record]:
    """Materials Project summary documents (mp-api) as mined records, MP's values kept as reference."""
    docs = client.materials.summary.search(elements=elements or None, chemsys=chemsys or None, fields=MP_FIELDS)
    for i, doc in enumerate(docs):
        get = doc.get if isinstance(doc, dict) else lambda k, d=doc: getattr(d, k, None)
        material_id = str(get("material_id") or f"mp-api:{i}")
        origin = _origin(OriginKind.mined, "mp-api", material_id, None, i)
        structure = get("structure")
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        if not isinstance(structure, Structure):
            yield Record.reject(origin, "MP document has no structure")
            continue
        reference = {"formation_energy_per_atom": get("formation_energy_per_atom"), "band_gap": get("band_gap"),
                     "e_above_hull": get("energy_above_hull"), "theoretical": get("theoretical")}
        yield Record(origin, structure, {k: v for k, v in reference.items() if v is not None})
