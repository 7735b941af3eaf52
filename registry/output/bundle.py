"""Sharing bundles: a candidate set and everything the registry knows about its members, as JSON and CIF only.

A bundle is a folder, or the same files under one top folder in a .tar.gz:

    manifest.json                  format and version, registry version, the set (members with the values and
                                   notes they had), the created time, and every other file's size and SHA-256
    cif/<registry_id>.cif          the relaxed structure when there is one, else the input structure
    documents/<registry_id>.json   {"registry_id": ..., "documents": {collection: [document, ...]}} for the
                                   structures, validated, relaxed, predicted, stability, tunnels and candidates
                                   documents of the member, provenance included; dates as {"$date": ISO 8601}

Importing checks everything before writing anything: names (no absolute paths, `..`, links or devices), sizes
and file count (a tar or gzip bomb stops at `Limits`), the manifest, every checksum, and every document against
its pydantic schema in `schemas/`. Documents are then upserted by their collection's key: one whose content
equals the local one is not written, so importing twice changes nothing; one that differs from a local document
is a conflict and the local one is kept (unless `replace=True`). Imported documents keep their provenance and
gain `imported_from` (bundle, manifest hash, time), which is left out of every comparison.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from bson import json_util
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter
from pymongo import ReplaceOne

from registry import __version__
from registry.db.stores import COLLECTIONS
from registry.errors import RegistryError
from registry.io.decoding import UntrustedModule, check_modules
from registry.output.optimade import geometry, provider, structure_attributes
from registry.output.sets import compare_set, get_set, import_set, member_json, members
from schemas.optimade import PREFIX
from schemas.sets import SetMember
from schemas.stage import StageDoc

if TYPE_CHECKING:
    from registry.db.client import Registry

FORMAT = "tmo-registry-set-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# the collections a member's documents come from (their schemas are in the catalogue, registry.db.stores)
BUNDLED = ("structures", "validated", "relaxed", "predicted", "stability", "tunnels", "candidates")
LOCAL_FIELDS = ("_id", "imported_from")  # where a document lives, not what it says


class BundleError(RegistryError):
    """A bundle that cannot be written or is refused; the message says which file and why."""


@dataclass(frozen=True)
class Limits:
    """What an import reads at most: bigger bundles are refused before they are unpacked into memory."""

    max_file_bytes: int = 20 * 2**20
    max_total_bytes: int = 100 * 2**20
    max_files: int = 10_000


# --- JSON with dates, and nothing else beyond plain JSON ---

def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    raise TypeError(f"cannot write a {type(value).__name__} to a bundle")


def _decode(obj: dict[str, Any]) -> Any:
    if "$date" in obj:
        if len(obj) != 1 or not isinstance(obj["$date"], str):
            raise ValueError(f"a date must be {{\"$date\": ISO 8601 text}}, not {obj!r:.80}")
        return datetime.fromisoformat(obj["$date"])
    if dollar := [k for k in obj if k.startswith("$")]:
        raise ValueError(f"unsupported key {dollar[0]!r} (bundles hold plain JSON and dates only)")
    return obj


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_encode, sort_keys=True, indent=1, ensure_ascii=False).encode()


def loads(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_hook=_decode)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{name}: not valid bundle JSON: {exc}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_name(name: str) -> str:
    """A bundle-relative POSIX path, or BundleError: absolute paths, '..', backslashes and drive letters are what
    path-traversal archives use."""
    if not name or "\x00" in name or "\\" in name or ":" in name:
        raise BundleError(f"refused file name {name!r}: empty, or with a NUL, backslash or colon")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise BundleError(f"refused file name {name!r}: absolute or leading outside the bundle")
    return str(path)


# --- The manifest ---

class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _safe(cls, path: str) -> str:
        try:
            return safe_name(path)
        except BundleError as exc:
            raise ValueError(str(exc)) from None


class BundleSet(BaseModel):
    """The set as exported: its metadata, the exported version and that version's members."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    author: str | None = None
    preset: str
    ion: str
    query: str = Field(description="The Mongo filter the set was made from, as MongoDB extended JSON text: "
                                   "operators start with '$', which bundle documents may not")
    top: int | None = None
    version: int = Field(ge=1)
    created_at: datetime
    members: list[dict[str, Any]]

    @field_validator("query")
    @classmethod
    def _query(cls, query: str) -> str:
        if not isinstance(json_util.loads(query), dict):
            raise ValueError("the query must be a JSON object")
        return query

    @field_validator("members")
    @classmethod
    def _members(cls, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each member must be a valid `SetMember`, and appear once."""
        seen = set()
        for m in members:
            try:
                SetMember(**{**m, "added_at": datetime.fromisoformat(m["added_at"])}).validate()
            except Exception as exc:  # mongoengine raises FieldDoesNotExist, ValidationError, KeyError, ...
                raise ValueError(f"member {m.get('registry_id')!r} is not a set member: {exc}") from None
            if m["registry_id"] in seen:
                raise ValueError(f"member {m['registry_id']!r} appears twice")
            seen.add(m["registry_id"])
        return members


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["tmo-registry-set-bundle"]
    format_version: int
    registry_version: str
    created: datetime
    set: BundleSet
    files: list[FileEntry]


class MemberDocuments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry_id: str
    documents: dict[Literal["structures", "validated", "relaxed", "predicted", "stability", "tunnels",
                            "candidates"], list[dict[str, Any]]]


# --- Export ---

@dataclass
class ExportReport:
    path: Path
    set_name: str
    version: int
    members: int
    files: int
    bytes: int
    manifest_sha256: str | None = None


def _content(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in LOCAL_FIELDS}


def _member_documents(reg: Registry, ids: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {rid: {} for rid in ids}
    for collection in BUNDLED:
        key = COLLECTIONS[collection].key
        for doc in sorted(reg.find_among("registry_id", ids, collection), key=lambda d: d[key]):
            out[doc["registry_id"]].setdefault(collection, []).append(_content(doc))
    return out


def _structure(documents: Mapping[str, list[dict[str, Any]]]) -> Structure | None:
    """The relaxed structure when the relaxation succeeded, else the input."""
    found = geometry(*(next(iter(documents.get(c, [])), None) for c in ("relaxed", "structures", "validated")))
    return found[0] if found else None


def export_set(reg: Registry, name: str, out: str | Path, *, version: int | None = None,
               fmt: Literal["bundle", "optimade"] = "bundle") -> ExportReport:
    """Write a set's version (default: the latest) as a bundle: a folder, or a .tar.gz when `out` ends so; or,
    with fmt="optimade", as an OPTIMADE structures response in one .json file."""
    out = Path(out)
    if out.exists():
        raise BundleError(f"{out} exists; remove it or choose another path")
    candidate_set = get_set(reg, name)
    chosen = members(candidate_set, version)
    number = version or candidate_set.version
    ids = [m.registry_id for m in chosen]
    for rid in ids:
        safe_name(f"cif/{rid}.cif")
    documents = _member_documents(reg, ids)
    if fmt == "optimade":
        return _export_optimade(candidate_set.name, number, chosen, documents, out)

    files: dict[str, bytes] = {}
    for rid in ids:
        if (structure := _structure(documents[rid])) is not None:
            files[f"cif/{rid}.cif"] = str(CifWriter(structure)).encode()
        files[f"documents/{rid}.json"] = dumps({"registry_id": rid, "documents": documents[rid]})
    now = datetime.now(UTC)
    manifest = Manifest(
        format=FORMAT, format_version=FORMAT_VERSION, registry_version=__version__, created=now,
        set=BundleSet(name=candidate_set.name, description=candidate_set.description or "",
                      author=candidate_set.author, preset=candidate_set.preset, ion=candidate_set.ion,
                      query=candidate_set.query, top=candidate_set.top, version=number,
                      created_at=candidate_set.created_at, members=[member_json(m) for m in chosen]),
        files=[FileEntry(path=p, sha256=_sha256(b), bytes=len(b)) for p, b in sorted(files.items())],
    )
    files[MANIFEST] = dumps(manifest.model_dump(mode="json"))
    if out.name.endswith((".tar.gz", ".tgz")):
        _write_tar(files, out, now)
    else:
        out.mkdir(parents=True)
        for path, data in files.items():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(data)
    return ExportReport(path=out, set_name=candidate_set.name, version=number, members=len(ids), files=len(files),
                        bytes=sum(map(len, files.values())), manifest_sha256=_sha256(files[MANIFEST]))


def _write_tar(files: Mapping[str, bytes], out: Path, when: datetime) -> None:
    top = out.name.removesuffix(".tar.gz").removesuffix(".tgz")
    partial = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(partial, "w:gz") as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size, info.mtime, info.mode = len(data), int(when.timestamp()), 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(partial, out)


def _export_optimade(name: str, version: int, chosen: list[SetMember],
                     documents: Mapping[str, Mapping[str, list[dict[str, Any]]]], out: Path) -> ExportReport:
    """The members as OPTIMADE structure resources (registry.output.optimade), with the set's values under the
    `_tmo_` provider prefix."""
    from optimade import __api_version__
    from optimade.models import Provider, ResponseMeta, ResponseMetaQuery, StructureResource, StructureResponseMany

    if out.suffix != ".json":
        raise BundleError(f"an OPTIMADE export is one JSON file: give a path ending in .json, not {out.name}")
    now = datetime.now(UTC)
    resources = []
    for m in chosen:
        structure = _structure(documents[m.registry_id])
        if structure is None:
            raise BundleError(f"{m.registry_id} has no structure in this registry")
        updated = max(d["last_updated"] for c in ("structures", "validated", "relaxed")
                      for d in documents[m.registry_id].get(c, []))
        attributes = structure_attributes(structure, m.registry_id) | {"last_modified": updated}
        attributes.update({f"_{PREFIX}_{k}": v for k, v in member_json(m).items() if k != "registry_id"})
        resources.append(StructureResource(id=m.registry_id, attributes=attributes))
    response = StructureResponseMany(
        data=resources,
        meta=ResponseMeta(
            query=ResponseMetaQuery(representation=f"/structures?filter=_{PREFIX}_sets HAS \"{name}\""),
            api_version=__api_version__, more_data_available=False, time_stamp=now, data_returned=len(resources),
            provider=Provider(**provider(f"candidate set {name} version {version}")),
        ),
    )
    data = response.model_dump_json(exclude_none=True, indent=1).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return ExportReport(path=out, set_name=name, version=version, members=len(resources), files=1, bytes=len(data))


# --- Reading a bundle safely ---

class _Capped(io.RawIOBase):
    """A stream that stops with BundleError once it has inflated beyond `allowance()`: the sizes the tar headers
    declared so far plus header room. Bounds what a gzip bomb can inflate to, PAX and long-name headers included."""

    def __init__(self, raw: io.BufferedIOBase, allowance: Callable[[], int]):
        self.raw, self.allowance, self.seen = raw, allowance, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.seen += len(data)
        if self.seen > self.allowance():
            raise BundleError("the archive inflates beyond the files it declares (a tar or gzip bomb?)")
        buffer[: len(data)] = data
        return len(data)


class _Budget:
    def __init__(self, limits: Limits):
        self.limits, self.files, self.total = limits, 0, 0

    def take(self, name: str, size: int) -> None:
        self.files += 1
        self.total += size
        if self.files > self.limits.max_files:
            raise BundleError(f"more than {self.limits.max_files} files: refused")
        if size > self.limits.max_file_bytes:
            raise BundleError(f"{name}: {size} bytes, more than the {self.limits.max_file_bytes} allowed per file")
        if self.total > self.limits.max_total_bytes:
            raise BundleError(f"more than {self.limits.max_total_bytes} bytes in all: refused")

    def inflated(self) -> int:
        """What a tar of the files taken so far may inflate to: contents, a header and padding per file (1.5 kB
        with a PAX header), and 64 kB of read-ahead and end-of-archive blocks."""
        return self.total + 1536 * (self.files + 1) + 2**16


def _read_tar(path: Path, limits: Limits) -> dict[str, bytes]:
    budget = _Budget(limits)
    files: dict[str, bytes] = {}
    try:
        with gzip.open(path, "rb") as raw, tarfile.open(fileobj=io.BufferedReader(_Capped(raw, budget.inflated)),
                                                        mode="r|") as tar:
            for info in tar:
                name = safe_name(info.name)
                if info.isdir():
                    continue
                if not info.isfile():
                    kind = "link" if info.issym() or info.islnk() else "device or other special file"
                    raise BundleError(f"{info.name}: a {kind}; bundles hold regular files only")
                if name in files:  # the last would silently win
                    raise BundleError(f"{name}: twice in the archive; a bundle holds each file once")
                budget.take(name, info.size)
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise BundleError(f"{name}: truncated ({len(data)} of {info.size} bytes)")
                files[name] = data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BundleError(f"{path.name} is not a readable .tar.gz (truncated or corrupt): {exc}") from None
    return files


def _read_folder(root: Path, limits: Limits) -> dict[str, bytes]:
    budget = _Budget(limits)
    files: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root):
        for entry in [*dirs, *names]:
            path = Path(folder, entry)
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise BundleError(f"{rel}: a link; bundles hold regular files only")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise BundleError(f"{rel}: not a regular file")
            budget.take(rel, path.lstat().st_size)
            files[safe_name(rel)] = path.read_bytes()
    return files


def read_bundle(path: str | Path, limits: Limits = Limits()) -> dict[str, bytes]:
    """Every file of a bundle (folder or .tar.gz), relative to the folder holding manifest.json."""
    path = Path(path)
    if path.is_symlink():
        raise BundleError(f"{path} is a link; give the bundle itself")
    if path.is_dir():
        files = _read_folder(path, limits)
    elif path.is_file():
        files = _read_tar(path, limits)
    else:
        raise BundleError(f"no bundle at {path}")
    if MANIFEST in files:
        return files
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and f"{tops.pop()}/{MANIFEST}" in files:
        return {name.split("/", 1)[1]: data for name, data in files.items()}
    raise BundleError(f"{path.name} has no {MANIFEST}: not a {FORMAT}")


# --- Checking ---

@dataclass
class Bundle:
    """A bundle that passed every check: its manifest, the manifest's hash and the documents per collection."""

    manifest: Manifest
    manifest_sha256: str
    documents: dict[str, list[dict[str, Any]]]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def check_bundle(files: Mapping[str, bytes]) -> Bundle:
    """The manifest, every checksum and every document against its schema; BundleError names the first problem."""
    raw = files[MANIFEST]
    data = loads(raw, MANIFEST)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise BundleError(f"{MANIFEST} is not a {FORMAT} manifest (format {found!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"bundle format version {data.get('format_version')!r}; this registry reads "
                          f"version {FORMAT_VERSION}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{MANIFEST} is not valid: {_first_error(exc)}") from None

    listed = {f.path: f for f in manifest.files}
    if missing := sorted(set(listed) - set(files)):
        raise BundleError(f"missing from the bundle though listed in the manifest: {', '.join(missing[:5])}")
    if extra := sorted(set(files) - set(listed) - {MANIFEST}):
        raise BundleError(f"not listed in the manifest (added after export?): {', '.join(extra[:5])}")
    for path, entry in listed.items():
        if len(files[path]) != entry.bytes:
            raise BundleError(f"{path}: {len(files[path])} bytes, the manifest says {entry.bytes} (truncated?)")
        if _sha256(files[path]) != entry.sha256:
            raise BundleError(f"{path}: checksum mismatch: the file was changed after export")

    documents: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for member in manifest.set.members:
        rid = member["registry_id"]
        path = f"documents/{rid}.json"
        if path not in listed:
            raise BundleError(f"member {rid} has no {path}")
        try:
            payload = MemberDocuments.model_validate(loads(files[path], path))
        except ValidationError as exc:
            raise BundleError(f"{path} is not a member's documents: {_first_error(exc)}") from None
        if payload.registry_id != rid:
            raise BundleError(f"{path} holds the documents of {payload.registry_id}, not {rid}")
        for collection, docs in payload.documents.items():
            for doc in docs:
                _check_document(path, collection, rid, doc)
                documents[collection].append(doc)
    return Bundle(manifest=manifest, manifest_sha256=_sha256(raw), documents=dict(documents))


def _check_document(path: str, collection: str, rid: str, doc: dict[str, Any]) -> None:
    key = COLLECTIONS[collection].key
    if doc.get("registry_id") != rid or not isinstance(doc.get(key), str):
        raise BundleError(f"{path}: a {collection} document of {doc.get('registry_id')!r} (key {key} "
                          f"{doc.get(key)!r}) in the documents of {rid}")
    if any(f in doc for f in LOCAL_FIELDS):
        raise BundleError(f"{path}: {collection} {doc[key]} carries {', '.join(f for f in LOCAL_FIELDS if f in doc)}")
    try:
        check_modules(doc)  # validating a structure field decodes its site properties with MontyDecoder
    except UntrustedModule as exc:
        raise BundleError(f"{path}: {collection} {doc[key]} {exc}") from None
    model = StageDoc if doc.get("state") == "failed" else COLLECTIONS[collection].schema
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        raise BundleError(f"{path}: {collection} {doc[key]} does not match the {model.__name__} schema: "
                          f"{_first_error(exc)}") from None


# --- Import ---

@dataclass
class ImportReport:
    bundle: str
    manifest_sha256: str
    set_name: str
    set_status: str  # "created", or "unchanged" when an equal set of that name was here
    written: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    @property
    def n_written(self) -> int:
        return sum(self.written.values())


def _canonical(value: Any) -> Any:
    """For comparing a bundle's document with the stored one: dates to the millisecond MongoDB keeps."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds") if value.tzinfo else \
            value.isoformat(timespec="milliseconds")
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items() if k not in LOCAL_FIELDS}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def import_bundle(reg: Registry, path: str | Path, *, set_name: str | None = None, replace: bool = False,
                  limits: Limits = Limits()) -> ImportReport:
    """Check a bundle completely, then write what is new. `set_name` imports the set under another name;
    `replace` overwrites local documents that differ from the bundle's (default: keep them, report conflicts)."""
    path = Path(path)
    bundle = check_bundle(read_bundle(path, limits))
    meta = bundle.manifest.set
    name = set_name or meta.name
    set_status = compare_set(reg, name, meta.members)
    if set_status == "conflict":
        raise BundleError(f"a set named {name!r} with other members exists here; import under another name "
                          "(--as NAME)")
    imported_from = {"bundle": path.name, "manifest_sha256": bundle.manifest_sha256, "set": meta.name,
                     "set_version": meta.version, "imported_at": datetime.now(UTC)}
    report = ImportReport(bundle=path.name, manifest_sha256=bundle.manifest_sha256, set_name=name,
                          set_status=set_status or "created")
    if set_status is None:  # before the first write: a refused import writes nothing
        import_set(reg, meta.model_dump(), meta.members, imported_from, name=name, check_only=True)
    reg.ensure_indexes(BUNDLED)
    for collection, docs in bundle.documents.items():
        key = COLLECTIONS[collection].key
        coll = reg.collection(collection)
        stored = {d[key]: d for d in reg.find_among(key, [d[key] for d in docs], collection)}
        ops = []
        for doc in docs:
            local = stored.get(doc[key])
            if local is not None and _canonical(local) == _canonical(doc):
                report.unchanged[collection] = report.unchanged.get(collection, 0) + 1
                continue
            if local is not None and not replace:
                report.conflicts.append(f"{collection}/{doc[key]}")
                continue
            ops.append(ReplaceOne({key: doc[key]}, {**doc, "imported_from": imported_from}, upsert=True))
        if ops:
            coll.bulk_write(ops, ordered=False)
            report.written[collection] = len(ops)
    if set_status is None:
        import_set(reg, meta.model_dump(), meta.members, imported_from, name=name)
    return report
