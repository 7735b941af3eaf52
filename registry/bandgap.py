"""The registry's own band-gap model: a matgl graph model trained on mined structures, shipped with a model card.

No working pretrained band-gap weights can be had offline (the legacy matgl folders give MgO a gap of ~0 eV), so
`train_bandgap` fits a matgl 4 property model on structures with Materials Project PBE gaps, keeps a held-out test
split that neither training nor early stopping sees, and writes `model_card.json` next to matgl's own files with
the data, the splits, the held-out errors against constant baselines and a hash of the model files.

`BandGapModel.load(folder)` refuses a folder without a card, with files that do not match the card's hash, with
module references outside matgl, or whose predictions do not separate wide-gap insulators from metals. Models are
loaded once per process and never at import, so builders pickled to worker processes stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import version as package_version
from numbers import Real
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from registry.errors import RegistryError

SHIPPED_MODEL = Path(__file__).parent / "data" / "models" / "bandgap"
CARD_FILE = "model_card.json"
MATGL_FILES = ("model.json", "model.pt", "state.pt")
PROPERTY_MODEL_CLASSES = ("MEGNet", "M3GNet", "TransformedTargetModel")
CHECK_MARGIN = 1.0  # eV: every wide-gap reference must be predicted this much above every metal reference
PREDICT_BATCH = 64

Architecture = Literal["megnet", "m3gnet"]


class BandGapModelError(RegistryError, ValueError):
    """A band-gap model folder that cannot be used, with the reason."""


class BandGapPrediction(NamedTuple):
    """A PBE band gap in eV (clipped at 0), or None and the reason there is none."""

    band_gap: float | None
    reason: str | None = None


def _fcc(a: float, species: list[str]) -> Structure:
    """Primitive face-centred cubic cell; a second species at (1/2, 1/2, 1/2) makes rock salt."""
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(lattice, species, [[0, 0, 0], [0.5, 0.5, 0.5]][:len(species)])


def _check_references() -> list[tuple[str, Structure, float]]:
    """Textbook crystals at about their PBE lattice constants, with Materials Project PBE gaps (eV).

    Two wide-gap ionic insulators and two metals: any usable band-gap model separates them by eV, not by noise.
    """
    return [
        ("MgO (mp-1265)", _fcc(4.25, ["Mg", "O"]), 4.45),
        ("LiF (mp-1138)", _fcc(4.08, ["Li", "F"]), 8.72),
        ("Cu (mp-30)", _fcc(3.62, ["Cu"]), 0.0),
        ("Al (mp-134)", _fcc(4.04, ["Al"]), 0.0),
    ]


def files_sha256(folder: Path) -> str:
    """One hash over matgl's three model files (weights, constructor arguments, class), in a fixed order."""
    digest = hashlib.sha256()
    for name in MATGL_FILES:
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    """What a model was trained on and how well it does on structures it never saw; `model_card.json`."""

    name: str
    architecture: str
    weights_sha256: str
    elements: list[str]
    target: str = "band gap (eV), Materials Project PBE; predictions below 0 are clipped to 0"
    data: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=dict)
    timestamps: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def version(self) -> str:
        return f"{self.architecture.lower()}-{self.weights_sha256[:12]}"

    def write(self, folder: Path) -> None:
        (folder / CARD_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        path = folder / CARD_FILE
        if not path.is_file():
            raise BandGapModelError(f"{folder} has no {CARD_FILE}: the registry only uses band-gap models whose "
                                    "training data and held-out errors are known (ModelCard.for_folder writes one "
                                    "for a model trained elsewhere)")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise BandGapModelError(f"{path} is not a model card: {exc}") from None

    @classmethod
    def for_folder(cls, folder: str | Path, name: str, notes: str) -> ModelCard:
        """Write a card for a matgl property model trained elsewhere (no held-out metrics: say where they are)."""
        folder = Path(folder)
        model = _load_matgl(folder)
        inner = getattr(model, "model", model)
        card = cls(name=name, architecture=type(inner).__name__, weights_sha256=files_sha256(folder),
                   elements=list(inner.element_types), software=_software(), notes=notes,
                   timestamps={"card_written": _now()})
        card.write(folder)
        return card


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _software() -> dict[str, str]:
    return {p: package_version(p) for p in ("matgl", "torch", "lightning", "pymatgen")}


def _module_references(obj: Any) -> Iterator[str]:
    """Every "@module" named in matgl's serialized constructor arguments, however deeply nested."""
    if isinstance(obj, dict):
        if isinstance(obj.get("@module"), str):
            yield obj["@module"]
        for value in obj.values():
            yield from _module_references(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _module_references(value)


def _load_matgl(folder: Path) -> torch.nn.Module:
    """`matgl.load_model` on a local folder only, after checks matgl does not make.

    matgl reads both .pt files with `torch.load(weights_only=True)`, but then imports every "@module" named in
    model.json / model.pt and calls that class with the stored arguments: a crafted folder could name any
    importable callable. Only matgl modules and property-model classes are let through. A folder missing a file
    is refused here, since matgl would otherwise try the Hugging Face hub.
    """
    missing = [f for f in MATGL_FILES if not (folder / f).is_file()]
    if missing:
        raise BandGapModelError(f"{folder} is not a matgl model folder (missing {', '.join(missing)})")
    try:
        header = json.loads((folder / "model.json").read_text())
        args = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for files it will not load
        raise BandGapModelError(f"{folder}: model files refused by the weights-only loader: "
                                f"{str(exc).splitlines()[0][:300]}") from None
    if header.get("@class") not in PROPERTY_MODEL_CLASSES:
        raise BandGapModelError(f"{folder} holds a {header.get('@class')!r}, not a matgl property model "
                                f"({', '.join(PROPERTY_MODEL_CLASSES)})")
    foreign = sorted({m for m in _module_references([header, args]) if not m.startswith("matgl.")})
    if foreign:
        raise BandGapModelError(f"{folder} names modules outside matgl ({', '.join(foreign)}); refusing to load it")
    import matgl

    try:
        return matgl.load_model(folder)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise BandGapModelError(f"matgl cannot load {folder}: {type(cause).__name__}: "
                                f"{str(cause).splitlines()[0][:300]}") from None


def _graph_items(structures: Sequence[Structure], converter: Any) -> list[tuple[Any, str | None]]:
    """(graph, lattice, state) per structure, or None and the reason it cannot be a graph for this model."""
    covered = set(converter.element_types)
    items: list[tuple[Any, str | None]] = []
    for s in structures:
        if not isinstance(s, Structure):
            items.append((None, f"not a pymatgen Structure: {type(s).__name__}"))
        elif not s.is_ordered:
            items.append((None, "disordered structure (partial occupancies): the model needs ordered sites"))
        elif uncovered := sorted({el.symbol for el in s.composition.elements} - covered):
            items.append((None, f"element(s) {', '.join(uncovered)} not covered by the model, which was trained "
                                f"on {len(covered)} elements"))
        else:
            try:
                graph, lattice, state = converter.get_graph(s)
            except Exception as exc:  # neighbour search or conversion of a broken cell
                items.append((None, f"cannot build a graph: {type(exc).__name__}: {exc}"))
                continue
            items.append(((graph, lattice, torch.as_tensor(state, dtype=torch.float32)), None))
    return items


def _forward(model: torch.nn.Module, items: Sequence[tuple[Any, Any, torch.Tensor]]) -> torch.Tensor:
    """Batched forward pass: node positions and periodic offsets from each graph's own lattice, as matgl trains."""
    from torch_geometric.data import Batch

    graphs, lattices, states = zip(*items, strict=True)
    g = Batch.from_data_list(list(graphs))
    lat = torch.cat([torch.as_tensor(x).reshape(1, 3, 3) for x in lattices])
    g.pos = torch.einsum("ni,nij->nj", g.frac_coords, lat[g.batch])
    g.pbc_offshift = torch.einsum("ei,eij->ej", g.pbc_offset, lat[g.batch[g.edge_index[0]]])
    return model(g, state_attr=torch.stack(states)).reshape(-1)


class BandGapModel:
    """A card-checked matgl band-gap model.

    >>> model = BandGapModel.load()                    # the shipped model, loaded once per process
    >>> model.predict([structure])                     # [1.93] (eV) or [None] when it cannot say
    >>> model.predict_with_reasons([structure])        # [BandGapPrediction(band_gap=None, reason="element(s) ...")]
    """

    def __init__(self, folder: Path, card: ModelCard, model: torch.nn.Module):
        from matgl.ext.pymatgen import Structure2Graph

        self.folder = folder
        self.card = card
        self.model = model.eval()
        inner = getattr(model, "model", model)
        self.elements = tuple(inner.element_types)
        self.converter = Structure2Graph(element_types=self.elements, cutoff=inner.cutoff)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def __repr__(self) -> str:
        return f"BandGapModel({self.name!r}, version={self.version!r})"

    @classmethod
    def load(cls, folder: str | Path | None = None, *, check: bool = True) -> BandGapModel:
        """The model in `folder` (default: the shipped one), once per process and per card.

        Refused (BandGapModelError) without a card, when the files' hash differs from the card's, and, with
        `check`, when it does not predict wide-gap insulators at least CHECK_MARGIN eV above metals.
        """
        folder = Path(folder or SHIPPED_MODEL).expanduser().resolve()
        if not folder.is_dir():
            raise BandGapModelError(f"no band-gap model folder at {folder}")
        card = ModelCard.read(folder)
        return _load_cached(folder, card.weights_sha256, check)

    def covers(self, elements: Iterable[str]) -> bool:
        """Whether every element has an embedding trained by this model."""
        return set(elements) <= set(self.elements)

    def predict(self, structures: Sequence[Structure]) -> list[float | None]:
        """PBE band gaps in eV; None where the model cannot say (see `predict_with_reasons`)."""
        return [p.band_gap for p in self.predict_with_reasons(structures)]

    def predict_with_reasons(self, structures: Sequence[Structure]) -> list[BandGapPrediction]:
        """One prediction per structure; a structure the model cannot handle never fails the others."""
        items = _graph_items(structures, self.converter)
        out = [BandGapPrediction(None, reason) for _, reason in items]
        ready = [i for i, (item, _) in enumerate(items) if item is not None]
        for start in range(0, len(ready), PREDICT_BATCH):
            chunk = ready[start:start + PREDICT_BATCH]
            for i, value in zip(chunk, self._values([items[i][0] for i in chunk]), strict=True):
                out[i] = value
        return out

    def _values(self, items: list[Any]) -> list[BandGapPrediction]:
        try:
            with torch.no_grad():
                raw = _forward(self.model, items).tolist()
        except Exception as exc:
            if len(items) > 1:  # find the structure that breaks the batch, keep the rest
                return [v for item in items for v in self._values([item])]
            return [BandGapPrediction(None, f"model failed: {type(exc).__name__}: {exc}")]
        return [BandGapPrediction(max(v, 0.0), None) if math.isfinite(v)
                else BandGapPrediction(None, f"model returned {v} (not a finite number)") for v in raw]

    def check(self) -> list[tuple[str, float, float | None]]:
        """(reference, MP PBE gap, prediction) for the reference crystals; BandGapModelError if they do not separate.

        Every wide-gap reference must be predicted at least CHECK_MARGIN eV above every metal reference. Models
        that load but give nonsense (such as old matgl weights under current matgl) fail here.
        """
        refs = _check_references()
        preds = self.predict_with_reasons([s for _, s, _ in refs])
        rows = [(label, gap, p.band_gap) for (label, _, gap), p in zip(refs, preds, strict=True)]
        missing = [f"{label}: {p.reason}" for (label, _, _), p in zip(refs, preds, strict=True) if p.band_gap is None]
        if missing:
            raise BandGapModelError(f"{self!r} cannot predict the check references: {'; '.join(missing)}")
        insulators = [got for _, gap, got in rows if gap > 0]
        metals = [got for _, gap, got in rows if gap == 0]
        if min(insulators) - max(metals) < CHECK_MARGIN:
            shown = ", ".join(f"{label} MP {gap:.2f} got {got:.2f}" for label, gap, got in rows)
            raise BandGapModelError(f"{self!r} fails the model check: wide-gap insulators must be predicted at "
                                    f"least {CHECK_MARGIN} eV above metals ({shown} eV)")
        return rows


@cache
def _load_cached(folder: Path, weights_sha256: str, check: bool) -> BandGapModel:
    card = ModelCard.read(folder)
    got = files_sha256(folder) if all((folder / f).is_file() for f in MATGL_FILES) else None
    if got != weights_sha256:
        raise BandGapModelError(f"{folder}: model files do not match the card (sha256 {got or 'of missing files'}, "
                                f"card says {weights_sha256}); retrain or restore the folder")
    model = BandGapModel(folder, card, _load_matgl(folder))
    if check:
        model.check()
    return model


def _build_model(architecture: Architecture, elements: tuple[str, ...]) -> torch.nn.Module:
    """matgl's default MEGNet (or an intensive M3GNet) on the training elements."""
    from matgl.models import M3GNet, MEGNet

    if architecture == "megnet":
        return MEGNet(element_types=elements, cutoff=4.0)
    if architecture == "m3gnet":
        return M3GNet(element_types=elements, is_intensive=True, readout_type="set2set", include_state=False)
    raise ValueError(f"unknown architecture {architecture!r}: use 'megnet' or 'm3gnet'")


def _output_layer(model: torch.nn.Module) -> torch.nn.Linear:
    head = model.output_proj if hasattr(model, "output_proj") else model.final_layer
    return head.last_linear


@contextlib.contextmanager
def _quiet_training(threads: int) -> Iterator[None]:
    """Few torch threads (small graphs: on shared cores more threads are slower) and no Lightning chatter."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _split(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1) or n_test < 1 or n_val < 1 or n - n_test - n_val < 1:
        raise ValueError(f"{n} usable structures cannot be split into train/val/test with val_fraction "
                         f"{val_fraction} and test_fraction {test_fraction}: each split needs at least one")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def train_bandgap(structures: Sequence[Structure], gaps: Sequence[float | None], out: str | Path, *,
                  architecture: Architecture = "megnet", epochs: int = 60, batch_size: int = 32, lr: float = 1e-3,
                  val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, patience: int = 15,
                  data_query: dict[str, Any] | None = None, data_source: str = "", ids: Sequence[str] | None = None,
                  threads: int = 1, progress: bool = True) -> ModelCard:
    """Fit a matgl band-gap model and save it, with its card, in `out`.

    Structures with a gap that is missing, not finite or negative, or with partial occupancies are dropped (counted
    in the card). The rest are split at random (`seed`) into train/val/test. The element list is the training
    split's, so every covered element has a trained embedding; val/test structures with other elements are left
    out of early stopping and of the metrics (counted). Training minimises the L1 error of standardised gaps;
    the best epoch on the validation split is kept, and the standardisation is folded into the output layer so
    `matgl.load_model(out)` predicts eV. The test split is scored once, at the end, through `BandGapModel`.
    """
    import lightning as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from matgl.ext.pymatgen import Structure2Graph, get_element_list
    from matgl.graph.data import collate_fn_graph
    from matgl.utils.training import ModelLightningModule
    from torch.utils.data import DataLoader

    started, t0 = _now(), time.perf_counter()
    out = Path(out)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(structures))]
    if not len(structures) == len(gaps) == len(ids):
        raise ValueError(f"{len(structures)} structures, {len(gaps)} gaps and {len(ids)} ids: they must pair up")
    dropped: dict[str, int] = {}
    usable: list[int] = []
    for i, (s, gap) in enumerate(zip(structures, gaps, strict=True)):
        reason = ("band gap missing, not finite or negative" if not (isinstance(gap, Real)
                                                                      and math.isfinite(gap) and gap >= 0)
                  else "not an ordered pymatgen Structure" if not (isinstance(s, Structure) and s.is_ordered)
                  else None)
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            usable.append(i)
    train, val, test = (
        [usable[k] for k in part] for part in _split(len(usable), val_fraction, test_fraction, seed))
    elements = get_element_list([structures[i] for i in train])
    pl.seed_everything(seed, verbose=False)
    model = _build_model(architecture, elements)
    converter = Structure2Graph(element_types=elements, cutoff=model.cutoff)

    def dataset(indices: list[int]) -> list[tuple]:
        items = _graph_items([structures[i] for i in indices], converter)
        return [(*item, {"band_gap": float(gaps[i])}) for i, (item, _) in zip(indices, items, strict=True)
                if item is not None]

    with _quiet_training(threads):
        train_set, val_set = dataset(train), dataset(val)
        if len(train_set) < len(train):
            raise ValueError(f"{len(train) - len(train_set)} training structures cannot be made into graphs")
        if not val_set:
            raise ValueError("no validation structure is covered by the training elements; use more data")
        train_gaps = np.array([gaps[i] for i in train], dtype=float)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate_fn_graph)
        val_loader = DataLoader(val_set, batch_size=batch_size, collate_fn=collate_fn_graph)
        module = ModelLightningModule(model=model, data_mean=float(train_gaps.mean()),
                                      data_std=float(train_gaps.std()) or 1.0, loss="l1_loss", lr=lr,
                                      decay_steps=max(1, epochs * len(loader)), decay_alpha=0.01)
        with tempfile.TemporaryDirectory() as ckpt_dir:
            best = ModelCheckpoint(dirpath=ckpt_dir, monitor="val_MAE", mode="min", save_top_k=1,
                                   save_weights_only=True)
            trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                                 callbacks=[best, EarlyStopping(monitor="val_MAE", mode="min", patience=patience)],
                                 enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0)
            trainer.fit(module, loader, val_loader)
            if not best.best_model_path:
                raise ValueError("training gave no finite validation MAE (diverged?); try a lower learning rate")
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
            best_epoch = int(state["epoch"]) + 1
        last = _output_layer(model)
        with torch.no_grad():  # predictions in eV: w' = std w, b' = std b + mean
            last.weight.mul_(module.data_std)
            last.bias.mul_(module.data_std).add_(module.data_mean)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out)

    card = ModelCard(
        name=f"tmo-registry band gap ({type(model).__name__})",
        architecture=type(model).__name__,
        weights_sha256=files_sha256(out),
        elements=list(elements),
        hyperparameters={"epochs": epochs, "epochs_run": trainer.current_epoch, "best_epoch": best_epoch,
                         "patience": patience, "batch_size": batch_size, "lr": lr, "lr_schedule": "cosine to 1%",
                         "optimizer": "Adam", "loss": "L1 on standardised gaps",
                         "n_parameters": sum(p.numel() for p in model.parameters()),
                         "model_kwargs": {k: v for k, v in model._init_args.items() if k != "element_types"}},
        software=_software(),
        notes=f"Trained from scratch by tmo-registry on {len(train)} structures, a small model: compare test_mae "
              "with the constant baselines before relying on it.",
    )
    scored = BandGapModel(out, card, model).predict_with_reasons([structures[i] for i in test])
    pairs = np.array([(p.band_gap, gaps[i]) for p, i in zip(scored, test, strict=True) if p.band_gap is not None],
                     dtype=float).reshape(-1, 2)
    card = replace(
        card,
        data={"source": data_source, "query": data_query, "given": len(structures), "dropped": dropped,
              "split": {"method": "random", "seed": seed, "val_fraction": val_fraction,
                        "test_fraction": test_fraction},
              "counts": {"train": len(train), "val": len(val), "test": len(test), "val_used": len(val_set),
                         "test_scored": len(pairs)},
              "test_ids": [ids[i] for i in test]},
        metrics={"val_mae_best": float(best.best_model_score), **_metrics(pairs[:, 0], pairs[:, 1], train_gaps)},
        timestamps={"started": started, "finished": _now(), "training_seconds": round(time.perf_counter() - t0, 1)},
    )
    card.write(out)
    return card


def _metrics(pred: np.ndarray, true: np.ndarray, train_gaps: np.ndarray) -> dict[str, float | None]:
    """Held-out errors, next to what constants learned from the training split would score."""
    if not len(true):
        return {}
    return {
        "test_mae": float(np.abs(pred - true).mean()),
        "test_rmse": float(np.sqrt(((pred - true) ** 2).mean())),
        "baseline_mae_train_mean": float(np.abs(train_gaps.mean() - true).mean()),
        "baseline_mae_train_median": float(np.abs(np.median(train_gaps) - true).mean()),
        "test_mae_insulators": float(np.abs(pred - true)[true > 0].mean()) if (true > 0).any() else None,
        "test_mae_metals": float(np.abs(pred - true)[true == 0].mean()) if (true == 0).any() else None,
        "test_metal_insulator_accuracy_at_0.5eV": float(((pred > 0.5) == (true > 0)).mean()),
    }
