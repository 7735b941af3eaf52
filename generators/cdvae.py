"""Samples written by CDVAE's sampler (Xie et al. 2022), imported as generated structures.

CDVAE's `scripts/evaluate.py --tasks gen` saves `eval_gen.pt`: a dict of tensors holding every sample of every
evaluation concatenated, with a leading `num_evals` axis:

    frac_coords [num_evals, N_atoms_total, 3]   atom_types [num_evals, N_atoms_total]
    lengths     [num_evals, n_samples, 3]       angles     [num_evals, n_samples, 3]
    num_atoms   [num_evals, n_samples]

plus `eval_setting` (the sampler's argparse arguments, which name the checkpoint folder) and `time`. A numpy
`.npz` with the same five arrays (the leading axis may be dropped) is read as well, so no torch is needed to
hand samples around. Samples are imported, not generated here: the run is the sampling run that wrote the file,
identified by the file's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pymatgen.core import Element, Lattice, Structure

from generators.base import Generator
from registry.io.readers import MAX_FILE_BYTES
from registry.io.records import Record
from registry.science.validity import MAX_SITES
from schemas.structure import Origin, OriginKind

ARRAY_KEYS = ("frac_coords", "atom_types", "lengths", "angles", "num_atoms")
MAX_Z = 103  # CDVAE's element embedding stops at 100; beyond 103 pymatgen and SMACT know too little
EXPECTED = ("CDVAE sampler output: eval_gen*.pt from cdvae scripts/evaluate.py, or an .npz with the arrays "
            + ", ".join(ARRAY_KEYS))
_SYMBOLS = {z: Element.from_Z(z).symbol for z in range(1, MAX_Z + 1)}


def _symbols(elements: Iterable[str]) -> frozenset[str]:
    symbols = frozenset(str(e).strip() for e in elements)
    unknown = sorted(s for s in symbols if not Element.is_valid_symbol(s))
    if unknown:
        raise ValueError(f"unknown element symbols in filter: {', '.join(unknown)}")
    return symbols


@dataclass(frozen=True)
class ElementFilter:
    """Which samples to keep by their elements: all of `all_of`, at least one of `any_of`, none of `exclude`."""

    all_of: frozenset[str] = frozenset()
    any_of: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("all_of", "any_of", "exclude"):
            object.__setattr__(self, name, _symbols(getattr(self, name)))
        clash = self.all_of & self.exclude
        if clash:
            raise ValueError(f"elements both required and excluded: {', '.join(sorted(clash))}")

    @classmethod
    def named(cls, name: str) -> ElementFilter:
        """A preset by name (`FILTERS`), e.g. `oxides`."""
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}; known: {', '.join(sorted(FILTERS))}")
        return FILTERS[name]

    def accepts(self, elements: frozenset[str]) -> bool:
        return (self.all_of <= elements and (not self.any_of or bool(self.any_of & elements))
                and not self.exclude & elements)

    def as_dict(self) -> dict[str, list[str]]:
        return {"all_of": sorted(self.all_of), "any_of": sorted(self.any_of), "exclude": sorted(self.exclude)}


FILTERS = {"oxides": ElementFilter(all_of=frozenset({"O"}))}


@dataclass
class ImportCounts:
    """What one `generate` pass did with the samples of its slice: samples == parsed + rejected + filtered."""

    samples: int = 0
    parsed: int = 0
    rejected: int = 0
    filtered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def load_samples(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    """The five arrays with a leading num_evals axis, the sampler's settings, and the file's SHA-256.

    Raises ValueError when the file is not CDVAE sampler output (wrong type, keys or array ranks). A `.pt` file is
    loaded with `weights_only=True`, allowing only tensors, plain containers and `argparse.Namespace` (how
    evaluate.py stores its settings), so loading never runs code from the file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit; "
                         f"expected {EXPECTED}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    _check_inflated_size(path, data)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        raw = _load_torch(path, data)
    elif suffix == ".npz":
        raw = _load_npz(path, data)
    else:
        raise ValueError(f"{path}: unknown file type {suffix or '(none)'}; expected {EXPECTED}")
    missing = [k for k in ARRAY_KEYS if k not in raw]
    if missing:
        raise ValueError(f"{path}: not {EXPECTED}; missing {', '.join(missing)} (found: {', '.join(map(str, raw))})")
    arrays = {k: _array(path, k, raw[k]) for k in ARRAY_KEYS}
    arrays = _with_eval_axis(path, arrays)
    settings: dict[str, Any] = {}
    if isinstance(raw.get("eval_setting"), argparse.Namespace):
        settings = json.loads(json.dumps(vars(raw["eval_setting"]), default=str))
    if isinstance(raw.get("time"), int | float):
        settings["sampling_time_s"] = float(raw["time"])
    return arrays, settings, digest


def _check_inflated_size(path: Path, data: bytes) -> None:
    """.npz and .pt files are zip archives: refuse one whose members inflate beyond the size limit (a zip bomb)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    if inflated > MAX_FILE_BYTES:
        raise ValueError(f"{path}: its arrays inflate to {inflated / 2**20:.0f} MiB, over the "
                         f"{MAX_FILE_BYTES // 2**20} MiB limit; expected {EXPECTED}")


def _load_torch(path: Path, data: bytes) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: refused to load: it holds objects other than tensors, so loading it could "
                         f"run code from the file ({detail}); expected {EXPECTED}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a torch file ({exc}); expected {EXPECTED}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: holds a {type(raw).__name__}, not a dict of tensors; expected {EXPECTED}")
    return raw


def _load_npz(path: Path, data: bytes) -> dict[str, Any]:
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named arrays")
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz without pickled objects ({exc}); expected {EXPECTED}") from None


def _array(path: Path, key: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ValueError(f"{path}: {key} is not a numeric array ({type(value).__name__}); expected {EXPECTED}")
    if key in ("atom_types", "num_atoms") and value.dtype.kind == "f":
        raise ValueError(f"{path}: {key} holds floats, CDVAE writes integers; expected {EXPECTED}")
    return value


def _with_eval_axis(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the num_evals axis where the file dropped it; the ranks must agree with num_atoms' rank."""
    extra = arrays["num_atoms"].ndim - 1
    if extra not in (0, 1):
        raise ValueError(f"{path}: num_atoms has shape {arrays['num_atoms'].shape}, expected [num_evals, n] or [n]")
    ranks = {"frac_coords": 2, "atom_types": 1, "lengths": 2, "angles": 2, "num_atoms": 1}
    for key, rank in ranks.items():
        array = arrays[key]
        if array.ndim != rank + extra or (rank == 2 and array.shape[-1] != 3):
            raise ValueError(f"{path}: {key} has shape {array.shape}, inconsistent with num_atoms "
                             f"{arrays['num_atoms'].shape}; expected {EXPECTED}")
    return arrays if extra else {k: v[None] for k, v in arrays.items()}


class CDVAESamples(Generator):
    """Every sample of a CDVAE sampler file as a `Record`: a structure, or a reject saying what is wrong with it.

    `elements` keeps only samples whose elements pass the filter (the others are counted in `counts.filtered`,
    not rejected); `offset`/`limit` import a slice of the samples in file order (eval by eval). Neither changes
    the run id or a sample's id, so importing more of the same file later adds to the same run without duplicates.
    """

    name = "cdvae"
    version: ClassVar[str] = "unknown"  # replaced per file by the checkpoint its sampler settings name

    def __init__(self, path: Path, elements: ElementFilter | None = None, offset: int = 0,
                 limit: int | None = None) -> None:
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError(f"offset and limit must not be negative, got {offset} and {limit}")
        self.path = Path(path)
        self.elements = elements
        self.offset = offset
        self.limit = limit
        self.arrays, self.settings, self.sha256 = load_samples(self.path)
        self.version = _checkpoint(self.settings) or "unknown"  # type: ignore[misc]
        self.counts = ImportCounts()

    @property
    def filtered(self) -> int:
        """Samples the element filter dropped in the last `generate` pass (read by `run_generator`)."""
        return self.counts.filtered

    def source(self) -> dict[str, Any]:
        """What identifies the sampling run: the file's content and the sampler's settings, not where it lies."""
        num_evals, n_samples = self.arrays["num_atoms"].shape
        return {"file_sha256": self.sha256, "format": self.path.suffix.lower().lstrip("."),
                "num_evals": num_evals, "n_samples": n_samples, "sampler": self.settings}

    def parameters(self) -> dict[str, Any]:
        return {**self.source(), "offset": self.offset, "limit": self.limit,
                "elements": self.elements.as_dict() if self.elements else None}

    def run_id(self) -> str:
        """From the source alone: a slice or filter selects samples of a run, it is not another run."""
        payload = json.dumps([self.name, self.version, self.source()], sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def generate(self, run_id: str) -> Iterator[Record]:
        self.counts = ImportCounts()
        source = self.source()
        num_atoms = self.arrays["num_atoms"]
        n_samples = num_atoms.shape[1]
        stop = None if self.limit is None else self.offset + self.limit
        for e in range(num_atoms.shape[0]):
            # a negative count cannot be placed: count it as 0 so the samples after it keep their atoms
            starts = np.concatenate([[0], np.cumsum(np.clip(num_atoms[e], 0, None))])
            first = e * n_samples
            for i in range(max(self.offset - first, 0), n_samples if stop is None else min(stop - first, n_samples)):
                origin = Origin(kind=OriginKind.generated, source="cdvae", source_id=f"{run_id}:{e}:{i}",
                                file=str(self.path), row=i, generator="cdvae", version=self.version,
                                run_id=run_id, parameters=source)
                record = self._record(origin, e, i, int(starts[i]))
                self.counts.samples += 1
                if record is None:
                    self.counts.filtered += 1
                    continue
                if record.structure is None:
                    self.counts.rejected += 1
                    self.counts.reasons[record.reason or ""] = self.counts.reasons.get(record.reason or "", 0) + 1
                else:
                    self.counts.parsed += 1
                yield record

    def _rows(self, key: str, e: int) -> int:
        """Rows of `key` that evaluation `e` has in the file: fewer than expected means the file is truncated."""
        array = self.arrays[key]
        return array.shape[1] if e < array.shape[0] else 0

    def _record(self, origin: Origin, e: int, i: int, start: int) -> Record | None:
        """The sample as a Record, or None when the element filter drops it."""
        a = self.arrays
        n = int(a["num_atoms"][e, i])
        stop = start + n
        atoms = min(self._rows("atom_types", e), self._rows("frac_coords", e))
        lattices = min(self._rows("lengths", e), self._rows("angles", e))
        types = a["atom_types"][e, start:stop] if stop <= atoms else None

        def reject(reason: str) -> Record:
            raw = {"eval": e, "sample": i, "num_atoms": n, "atom_types": None if types is None else types.tolist(),
                   "lengths": a["lengths"][e, i].tolist() if i < lattices else None,
                   "angles": a["angles"][e, i].tolist() if i < lattices else None}
            return Record.reject(origin, reason, json.dumps(raw))

        if n <= 0:
            return reject(f"sample has {n} atoms")
        if n > MAX_SITES:  # refused before a Structure of that size is built
            return reject(f"sample has {n} atoms, more than the limit of {MAX_SITES}")
        if types is None:
            return reject(f"truncated file: the sample's atoms {start}..{stop - 1} lie beyond the {atoms} atoms "
                          "that atom_types and frac_coords hold")
        bad = sorted({int(z) for z in types if not 1 <= z <= MAX_Z})
        if bad:
            return reject(f"atom types outside 1..{MAX_Z}: {bad}")
        if self.elements and not self.elements.accepts(frozenset(_SYMBOLS[int(z)] for z in types)):
            return None
        if i >= lattices:
            return reject(f"truncated file: no lattice for the sample (lengths and angles hold {lattices} rows)")
        lengths, angles, frac = a["lengths"][e, i], a["angles"][e, i], a["frac_coords"][e, start:stop]
        if not (np.isfinite(lengths).all() and np.isfinite(angles).all() and np.isfinite(frac).all()):
            return reject("non-finite lattice lengths, angles or fractional coordinates")
        if (lengths <= 0).any():
            return reject(f"non-positive lattice length in {lengths.tolist()}")
        with np.errstate(invalid="ignore", divide="ignore"):  # impossible angles give NaN, checked next
            lattice = Lattice.from_parameters(*lengths.tolist(), *angles.tolist())
        if not np.isfinite(lattice.volume) or lattice.volume <= 0:
            return reject(f"lattice angles {angles.tolist()} do not form a cell")
        structure = Structure(lattice, [int(z) for z in types], frac.astype(float), coords_are_cartesian=False)
        return Record(origin, structure)


def _checkpoint(settings: dict[str, Any]) -> str | None:
    """The checkpoint folder the sampler read, as Hydra lays it out (`<date>/<experiment>`), if recorded."""
    model_path = settings.get("model_path")
    if not isinstance(model_path, str) or not model_path.strip("/"):
        return None
    return "/".join(Path(model_path).parts[-2:])
