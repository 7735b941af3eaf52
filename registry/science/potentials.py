"""Universal interatomic potentials behind one small interface, and the check that refuses a broken one.

`load_potential("chgnet")` gives CHGNet 0.3.0 from the `chgnet` package (weights ship inside it, energies are
MP2020-compatible); `load_potential("sevenn:7net-0")` (or `sevenn:7net-l3i5`, or `sevenn:<checkpoint file>`) gives
SevenNet from the `sevenn` package, whose raw GGA/GGA+U energies are moved to the MP2020-compatible scale
(`registry.science.corrections`); `load_potential("matgl:<folder>")` gives any matgl 4 PES model saved in a local
folder. Models load on first use and are cached per process, so builders pickled to worker processes stay light.
Each potential names its checkpoint's sha256 and the correction added to its energies, for provenance.

`check_potential` compares static energies of a few Materials Project structures with their MP2020-compatible
energies (`registry/data/model_check/`). It exists because old matgl weights load silently in matgl 4 and then
give oxide energies that are several eV/atom off.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from registry import DATA
from registry.errors import RegistryError
from registry.io.decoding import check_modules
from schemas.relaxed import PotentialInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

MODEL_CHECK_FILE = DATA / "model_check" / "reference_energies.json"
MODEL_CHECK_TOLERANCE = 0.1  # eV/atom; README in data/model_check says why
MATGL_MODEL_FILES = ("model.json", "model.pt", "state.pt")


class PotentialLoadError(RegistryError, ValueError):
    """A potential spec that cannot be loaded here, with the reason."""


class ModelCheckError(RegistryError, ValueError):
    """A potential whose energies disagree with the Materials Project references."""


class Evaluation(NamedTuple):
    """One single-point calculation in ASE units: total energy (eV), forces (eV/Å), Voigt stress (eV/Å^3)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray


class Potential(ABC):
    """A universal potential: static energies, ASE single points, and relaxation.

    `spec` is what `load_potential` was given, so worker processes can load the same model again.
    `energy_correction` names what is added to the model's own energies to put them on the MP2020-compatible
    scale (None: the model predicts that scale itself).
    """

    spec: str
    name: str
    version: str
    device: str
    checkpoint_sha256: str | None = None
    energy_correction: str | None = None

    @abstractmethod
    def calculator(self) -> Calculator:
        """A fresh ASE calculator for this model."""

    def evaluate(self, atoms: Sequence[Atoms]) -> list[Evaluation]:
        """Energies, forces and stresses of several configurations; backends that can batch override this."""
        calc = self.calculator()
        out = []
        for a in atoms:
            a = a.copy()
            a.calc = calc
            out.append(Evaluation(float(a.get_potential_energy()), a.get_forces(), a.get_stress(voigt=True)))
        return out

    def energy_per_atom(self, structures: Sequence[Structure]) -> list[float]:
        """Static energy per atom (eV/atom) of each structure, no relaxation."""
        atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
        return [e.energy / len(a) for e, a in zip(self.evaluate(atoms), atoms, strict=True)]

    def energy_per_atom_each(self, structures: Sequence[Structure]) -> list[float | Exception]:
        """`energy_per_atom` in one batch; if the batch raises, one by one, so that only the structure that breaks
        it fails (its exception in its place)."""
        try:
            return list(self.energy_per_atom(structures))
        except Exception:
            out: list[float | Exception] = []
            for structure in structures:
                try:
                    out.append(self.energy_per_atom([structure])[0])
                except Exception as exc:
                    out.append(exc)
            return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, version={self.version!r}, device={self.device!r})"


@contextlib.contextmanager
def _quiet_chgnet():
    """CHGNet builds its batch volumes from a tensor that requires grad; torch warns, harmlessly, every batch."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
        yield


class CHGNetPotential(Potential):
    """CHGNet from the `chgnet` package; its forward pass takes a batch of graphs, so `evaluate` batches."""

    def __init__(self, model_name: str = "0.3.0", device: str = "cpu"):
        import chgnet
        from chgnet.model import CHGNet

        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its parameter count on every load
            self.model = CHGNet.load(model_name=model_name, use_device=device, verbose=False)
        if not self.model.is_intensive:  # evaluate() reads energies per atom, as every released CHGNet gives them
            raise PotentialLoadError(f"CHGNet model {model_name!r} predicts total energies; only per-atom models load")
        self.model.eval()
        self.model.graph_converter.set_isolated_atom_response("error")  # an isolated atom is a broken crystal
        self.spec = "chgnet" if model_name == "0.3.0" else f"chgnet:{model_name}"
        self.name = "CHGNet"
        self.version = f"chgnet {package_version('chgnet')}, model {self.model.version}"
        self.device = device
        weights = list((Path(chgnet.__file__).parent / "pretrained" / model_name).glob("*.pth.tar"))  # as CHGNet.load
        self.checkpoint_sha256 = _sha256(weights[0].read_bytes()) if len(weights) == 1 else None

    def calculator(self) -> Calculator:
        from chgnet.model.dynamics import CHGNetCalculator

        with contextlib.redirect_stdout(io.StringIO()):  # it prints the device
            return CHGNetCalculator(self.model, use_device=self.device, stress_weight=units.GPa,
                                    on_isolated_atoms="error")  # it sets this on the shared model

    def evaluate(self, atoms: Sequence[Atoms]) -> list[Evaluation]:
        """One batched forward pass and one backward pass for forces and stress together.

        CHGNet's `predict_graph` runs its training path: one backward pass for forces and another for stress, each
        keeping the graph for a second derivative. Inference needs neither: this takes half the time of a
        relaxation step's model work (bench/profile_relax.py) and gives `CHGNetCalculator`'s numbers to float32
        round-off (tests/registry/test_potentials.py).
        """
        import torch
        from chgnet.model.model import BatchedGraph

        model = self.model
        graphs = [model.graph_converter(AseAtomsAdaptor.get_structure(a)).to(self.device) for a in atoms]
        with _quiet_chgnet():
            batch = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                             angle_basis_expansion=model.angle_basis_expansion, compute_stress=True)
        prediction = model._compute(batch)  # the energy only; both derivatives follow from one backward pass
        atoms_per_graph = prediction["atoms_per_graph"]
        total = prediction["e"] * atoms_per_graph  # the model's energy is per atom (checked on loading)
        grads = torch.autograd.grad(total.sum(), [*batch.atom_positions, *batch.strains])
        if model.composition_model is not None:  # per-atom reference energies: no geometry, no derivative
            total = total + model.composition_model(graphs) * atoms_per_graph
        n = len(graphs)
        return [Evaluation(float(e), -f.detach().cpu().numpy().astype(float),
                           full_3x3_to_voigt_6_stress(s.detach().cpu().numpy().astype(float) / float(v)))
                for e, f, s, v in zip(total.detach().cpu().numpy(), grads[:n], grads[n:], batch.volumes, strict=True)]

    def energy_per_atom(self, structures: Sequence[Structure]) -> list[float]:
        if not structures:
            return []
        with _quiet_chgnet():
            preds = self.model.predict_structure(list(structures), task="e", batch_size=16)
        preds = [preds] if isinstance(preds, dict) else preds
        return [float(p["e"]) for p in preds]


class MatglPotential(Potential):
    """A matgl 4 PES model (M3GNet, TensorNet, CHGNet) from a local folder, through `matgl.ext.ase.PESCalculator`."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        folder = Path(folder).expanduser()
        missing = [f for f in MATGL_MODEL_FILES if not (folder / f).is_file()]
        if missing:
            raise PotentialLoadError(
                f"matgl model {str(folder)!r} is not a local model folder (missing {', '.join(missing)}). "
                "Names on the matgl model hub need the internet, which this registry does not use: "
                "download the model elsewhere and pass its folder as 'matgl:<folder>'.")
        if device != "cpu":
            raise PotentialLoadError(f"matgl potentials run on cpu here, not {device!r}")
        import matgl
        import torch

        try:  # matgl imports and calls every "@module" these files name: only matgl's own may be named
            header = json.loads((folder / "model.json").read_text())
            args = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
            check_modules([header, args], trusted=("matgl.",))
        except Exception as exc:  # UntrustedModule, or files the weights-only loader refuses
            raise PotentialLoadError(f"{folder}: refused: {str(exc).splitlines()[0][:300]}") from None
        self.model = matgl.load_model(folder)
        if not hasattr(self.model, "calc_stresses"):
            raise PotentialLoadError(f"{folder} holds a {type(self.model).__name__}, not a matgl PES Potential")
        self.spec = f"matgl:{folder}"
        self.name = folder.name
        self.version = f"{folder.name}, matgl {matgl.__version__}"
        self.device = device
        self.checkpoint_sha256 = _sha256((folder / "model.pt").read_bytes())

    def calculator(self) -> Calculator:
        from matgl.ext.ase import PESCalculator

        return PESCalculator(self.model, stress_unit="eV/A3")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# SevenNet models whose weights ship in the `sevenn` wheel (sevenn.util.pretrained_name_to_path would download others)
SEVENNET_SHIPPED = {"7net-0": "SEVENNET_0_11Jul2024", "7net-l3i5": "SEVENNET_l3i5"}


def _numpy_globals() -> list:
    """What a SevenNet checkpoint's config may hold besides torch's own types: numpy arrays and dtypes (the
    shipped ones name numpy 1's `numpy.core.multiarray._reconstruct`, which numpy 2 keeps in `numpy._core`)."""
    import numpy

    reconstruct = numpy._core.multiarray._reconstruct
    return [(reconstruct, "numpy.core.multiarray._reconstruct"), reconstruct, numpy.ndarray, numpy.dtype,
            *(getattr(numpy.dtypes, name) for name in numpy.dtypes.__all__)]


def _read_sevenn_checkpoint(path: Path, data: bytes) -> None:
    """Refuse (PotentialLoadError, one line) a file that is not a SevenNet checkpoint, before sevenn unpickles it.

    sevenn loads checkpoints with `weights_only=False`, which runs whatever code a pickle names. The file is read
    first with torch's weights-only unpickler, which allows tensors and numpy arrays and nothing else, and must
    hold a SevenNet config and a state dict.
    """
    import torch

    def refuse(why: str) -> PotentialLoadError:
        return PotentialLoadError(f"sevenn:{path} is not a SevenNet checkpoint: {why}")

    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        foreign = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise refuse(f"it names {foreign[1]}, which torch's weights-only loader refuses" if foreign else
                     f"torch cannot read it as a weights file ({type(exc).__name__})") from None
    if not (isinstance(raw, dict) and isinstance(raw.get("config"), dict) and isinstance(raw.get("model_state_dict"), dict)
            and raw["model_state_dict"]):
        raise refuse("no SevenNet config and model state dict in it")
    missing = [k for k in ("cutoff", "chemical_species", "version") if k not in raw["config"]]
    if missing:
        raise refuse(f"its config has no {', '.join(missing)}")


class SevenNetPotential(Potential):
    """SevenNet (an equivariant NequIP-type network) from the `sevenn` package, batched like CHGNet.

    The shipped `7net-0` and `7net-l3i5` were trained on MPtrj's uncorrected GGA/GGA+U energies: every energy gets
    MP2020's correction for its structure (`registry.science.corrections`), so it is on the scale of CHGNet, the
    elemental references and the reference hull. A checkpoint file given by path is read with torch's weights-only
    unpickler before sevenn loads it (`_read_sevenn_checkpoint`).
    """

    def __init__(self, model: str = "7net-0", device: str = "cpu"):
        import sevenn
        import sevenn._const
        import sevenn._keys as KEY
        from sevenn.checkpoint import SevenNetCheckpoint

        from registry.science.corrections import MP2020_CORRECTION

        if model in SEVENNET_SHIPPED:
            path, name = Path(getattr(sevenn._const, SEVENNET_SHIPPED[model])), f"SevenNet {model}"
        else:
            path, name = Path(model).expanduser(), f"SevenNet {Path(model).name}"
            if not path.is_file():
                raise PotentialLoadError(f"sevenn:{model} is neither a SevenNet model shipped in the sevenn package "
                                         f"({', '.join(SEVENNET_SHIPPED)}) nor a checkpoint file")
        data = path.read_bytes()
        _read_sevenn_checkpoint(path, data)
        checkpoint = SevenNetCheckpoint(str(path))
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")  # no GPU tensor-product accelerator: e3nn's own kernels are used
                self.model = checkpoint.build_model()
            config = checkpoint.config
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise PotentialLoadError(f"sevenn:{path} is not a SevenNet checkpoint sevenn {sevenn.__version__} can "
                                     f"build: {type(exc).__name__}{': ' + first if first else ''}") from None
        if config.get("use_modality"):
            raise PotentialLoadError(f"sevenn:{path} is a multi-fidelity model, which needs a modality the registry "
                                     "does not choose; use 7net-0, 7net-l3i5 or a single-fidelity checkpoint")
        self.model.set_is_batch_data(True)
        self.model.to(device).eval()
        self.cutoff = float(config[KEY.CUTOFF])
        self.elements = frozenset(chemical_symbols[z] for z in config[KEY.TYPE_MAP])
        self.spec = f"sevenn:{model}"
        self.name = name
        self.checkpoint_sha256 = _sha256(data)
        self.version = f"sevenn {sevenn.__version__}, checkpoint sha256 {self.checkpoint_sha256[:12]}"
        self.device = device
        self.energy_correction = MP2020_CORRECTION

    def calculator(self) -> Calculator:
        """SevenNet's own ASE calculator (uncorrected energies), on a copy: it switches its model out of batch mode."""
        import copy

        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SevenNetCalculator(copy.deepcopy(self.model), file_type="model_instance", device=self.device)

    def evaluate(self, atoms: Sequence[Atoms]) -> list[Evaluation]:
        """One batched forward pass (sevenn computes forces and stress inside it), then MP2020's correction of each
        energy; the stress in ASE's sign and Voigt order, as `SevenNetCalculator` gives it."""
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.data import Batch

        from registry.science.corrections import mp2020_correction_per_atom

        if not atoms:
            return []
        for a in atoms:
            unknown = sorted(set(a.get_chemical_symbols()) - self.elements)
            if unknown:
                raise ValueError(f"{self.name} has no parameters for {', '.join(unknown)}")
        corrections = [mp2020_correction_per_atom(AseAtomsAdaptor.get_structure(a)) * len(a) for a in atoms]
        graphs = [AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(a, self.cutoff)) for a in atoms]
        out = self.model(Batch.from_data_list(graphs).to(self.device))
        sizes = [len(a) for a in atoms]
        energies = out[KEY.PRED_TOTAL_ENERGY].detach().cpu().numpy().astype(float).reshape(-1)
        forces = out[KEY.PRED_FORCE].detach().cpu().numpy().astype(float)
        stresses = -out[KEY.PRED_STRESS].detach().cpu().numpy().astype(float)[:, [0, 1, 2, 4, 5, 3]]
        bounds = np.cumsum([0, *sizes])
        return [Evaluation(float(e) + c, forces[bounds[i]:bounds[i + 1]], stresses[i])
                for i, (e, c) in enumerate(zip(energies, corrections, strict=True))]


def load_potential(spec: str = "chgnet", device: str = "cpu") -> Potential:
    """The potential named by `spec`, loaded once per process: "chgnet", "chgnet:<model>", "sevenn:<model or
    checkpoint file>" or "matgl:<folder>"."""
    return _load_potential(spec, device)


@cache
def _load_potential(spec: str, device: str) -> Potential:
    backend, _, arg = spec.partition(":")
    if backend == "chgnet":
        return CHGNetPotential(arg or "0.3.0", device)
    if backend == "sevenn" and arg:
        return SevenNetPotential(arg, device)
    if backend == "matgl" and arg:
        return MatglPotential(arg, device)
    raise PotentialLoadError(f"unknown potential spec {spec!r}: use 'chgnet', 'chgnet:<model>', 'sevenn:7net-0', "
                             "'sevenn:7net-l3i5', 'sevenn:<checkpoint file>' or 'matgl:<folder>'")


@dataclass(frozen=True)
class CheckRow:
    material_id: str
    formula: str
    expected: float  # eV/atom, MP2020-compatible
    got: float  # eV/atom, static

    @property
    def error(self) -> float:
        return self.got - self.expected


@dataclass(frozen=True)
class ModelCheckReport:
    """Static energies of the reference structures against Materials Project, for one (model, version)."""

    name: str
    version: str
    tolerance: float
    rows: tuple[CheckRow, ...]

    @property
    def failures(self) -> tuple[CheckRow, ...]:
        return tuple(r for r in self.rows if not abs(r.error) <= self.tolerance)  # NaN fails too

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def max_abs_error(self) -> float:
        return max(abs(r.error) for r in self.rows)


def model_check_references(path: Path = MODEL_CHECK_FILE) -> list[dict]:
    """The shipped references: MP CIF text, parsed "structure", and MP2020-compatible "energy_per_atom"."""
    refs = json.loads(path.read_text())["references"]
    with warnings.catch_warnings():  # pymatgen notes that it rounds MP's coordinates to ideal values
        warnings.filterwarnings("ignore", message="Issues encountered while parsing CIF")
        for r in refs:
            r["structure"] = Structure.from_str(r["cif"], fmt="cif")
    return refs


_CHECKS: dict[tuple[str, str, float], ModelCheckReport] = {}


def check_potential(pot: Potential, tolerance: float = MODEL_CHECK_TOLERANCE) -> ModelCheckReport:
    """Refuse `pot` (ModelCheckError) if any reference energy is off by more than `tolerance` eV/atom.

    The result is cached per (name, version, tolerance) for this process, so builders can call it per batch.
    """
    key = (pot.name, pot.version, tolerance)
    if key not in _CHECKS:
        refs = model_check_references()
        got = pot.energy_per_atom([r["structure"] for r in refs])
        rows = tuple(CheckRow(r["material_id"], r["formula"], r["energy_per_atom"], g)
                     for r, g in zip(refs, got, strict=True))
        _CHECKS[key] = ModelCheckReport(pot.name, pot.version, tolerance, rows)
    report = _CHECKS[key]
    if not report.passed:
        bad = "; ".join(f"{r.formula} ({r.material_id}): expected {r.expected:.3f}, got {r.got:.3f} eV/atom"
                        + ("" if math.isnan(r.got) else f" (off by {r.error:+.3f})") for r in report.failures)
        raise ModelCheckError(f"{pot.name} [{pot.version}] fails the model check, tolerance {tolerance} eV/atom "
                              f"of the MP2020-compatible energy: {bad}")
    return report


def checked_potential(spec: str, device: str = "cpu") -> tuple[Potential, PotentialInfo]:
    """The potential `spec` names, once it passed the model check (else ModelCheckError), and what a document
    records of it."""
    potential = load_potential(spec, device)
    report = check_potential(potential)
    return potential, PotentialInfo(spec=spec, name=potential.name, version=potential.version, device=device,
                                    model_check_max_error=report.max_abs_error,
                                    checkpoint_sha256=potential.checkpoint_sha256,
                                    energy_correction=potential.energy_correction)
