"""Potentials, the model check and the relaxer, on CHGNet (offline, weights in the package)."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from registry.science.potentials import (
    MODEL_CHECK_TOLERANCE,
    Evaluation,
    ModelCheckError,
    Potential,
    PotentialLoadError,
    check_potential,
    load_potential,
    model_check_references,
)
from registry.science.relaxation import RelaxSettings, relax, relax_batch
from tests.paths import SHIPPED, require, shared_root

DATA = shared_root()
LEGACY_M3GNET = DATA / "matgl_pretrained" / "M3GNet-MP-2021.2.8-PES" if DATA else None


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def chgnet() -> Potential:
    return load_potential("chgnet")


def reference(material_id: str) -> Structure:
    return next(r["structure"] for r in model_check_references() if r["material_id"] == material_id)


def rattled(material_id: str, seed: int = 0) -> Structure:
    return reference(material_id).perturb(0.1, seed=seed)


def test_chgnet_passes_the_model_check_and_the_result_is_cached(chgnet):
    report = check_potential(chgnet)
    assert report.passed
    assert len(report.rows) == len(model_check_references()) >= 3
    assert report.max_abs_error <= MODEL_CHECK_TOLERANCE
    assert check_potential(chgnet) is report
    assert load_potential("chgnet") is chgnet
    assert "model 0.3.0" in chgnet.version


def test_legacy_matgl_m3gnet_loads_but_is_refused():
    require(LEGACY_M3GNET or Path("../shared/data/matgl_pretrained"))
    legacy = load_potential(f"matgl:{LEGACY_M3GNET}")
    with pytest.raises(ModelCheckError, match=r"MnO2 \(mp-510408\): expected -8\.128"):
        check_potential(legacy)


def test_hub_names_and_unknown_specs_fail_with_a_reason():
    with pytest.raises(PotentialLoadError, match="not a local model folder"):
        load_potential("matgl:TensorNet-MatPES-PBE-v2025.1-PES")
    with pytest.raises(PotentialLoadError, match="unknown potential spec"):
        load_potential("mace")


def test_reference_energies_are_formation_energy_plus_elemental_references():
    import pandas as pd

    rows = pd.concat(pd.read_csv(SHIPPED["mp20_sample"] / f"{s}.csv") for s in ("train", "val", "test"))
    path = SHIPPED["matbench_discovery"] / "2023-02-07-mp-elemental-reference-entries.json.gz"
    elements = json.loads(gzip.open(path).read())
    for ref in model_check_references():
        row = rows[rows.material_id == ref["material_id"]].iloc[0]
        composition = ref["structure"].composition
        assert row.cif == ref["cif"]
        e_ref = sum(composition.get_atomic_fraction(el) * elements[el.symbol]["energy"]
                    / sum(elements[el.symbol]["composition"].values()) for el in composition)
        assert ref["energy_per_atom"] == pytest.approx(row.formation_energy_per_atom + e_ref, abs=1e-5)


def test_batched_evaluation_matches_the_ase_calculator(chgnet):
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = [AseAtomsAdaptor.get_atoms(rattled(m)) for m in ("mp-550206", "mp-1008634")]
    batched = chgnet.evaluate(atoms)
    for a, ev in zip(atoms, batched, strict=True):
        a.calc = chgnet.calculator()
        assert ev.energy == pytest.approx(a.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(ev.forces, a.get_forces(), atol=1e-4)
        np.testing.assert_allclose(ev.stress, a.get_stress(), atol=1e-5)


def test_relaxing_a_rattled_crystal_lowers_its_energy(chgnet):
    result = relax(rattled("mp-550206"), chgnet, RelaxSettings(steps=100))
    assert result.status == "converged" and result.converged
    assert result.final_energy_per_atom < result.initial_energy_per_atom
    assert 0 < result.steps < 100
    assert result.max_force < 0.1
    assert result.rmsd is not None and result.rmsd < 0.2
    assert abs(result.volume_change) < 0.1
    assert result.structure.composition == reference("mp-550206").composition
    assert json.dumps(result.as_dict())  # storable as is


def test_running_out_of_steps_is_recorded_not_raised(chgnet):
    result = relax(rattled("mp-510408"), chgnet, RelaxSettings(steps=2))
    assert result.status == "unconverged" and not result.converged
    assert result.steps == 2
    assert "after 2 steps" in result.reason


def test_settings_refuse_an_optimizer_the_lockstep_cannot_drive():
    with pytest.raises(ValueError, match="unknown optimizer 'FIRE2'"):
        RelaxSettings(optimizer="FIRE2")


def test_a_cell_that_blows_up_is_stopped_as_exploded(chgnet):
    squeezed = reference("mp-1008634")
    squeezed.scale_lattice(squeezed.volume * 0.6)
    result = relax(squeezed, chgnet, RelaxSettings(max_volume_factor=1.2))
    assert result.status == "exploded"
    assert "volume changed" in result.reason
    assert result.steps < 500


class NaNAfter(Potential):
    """Wraps a potential and turns its energies into NaN from the `n`-th evaluation on."""

    def __init__(self, inner: Potential, n: int):
        self.inner, self.n, self.calls = inner, n, 0
        self.spec, self.name, self.version, self.device = "test", "nan", "0", "cpu"

    def calculator(self):
        return self.inner.calculator()

    def evaluate(self, atoms):
        self.calls += 1
        out = self.inner.evaluate(atoms)
        return out if self.calls < self.n else [Evaluation(math.nan, e.forces, e.stress) for e in out]


def test_nan_energies_stop_the_relaxation_as_exploded(chgnet):
    result = relax(rattled("mp-550206", seed=1), NaNAfter(chgnet, 3))
    assert result.status == "exploded"
    assert result.reason == "energy is nan at step 2"
    assert result.initial_energy_per_atom is not None and result.final_energy_per_atom is None


def test_a_batch_keeps_order_and_returns_failures_in_place(chgnet):
    isolated = Structure(Lattice.cubic(20.0), ["Mg"], [[0, 0, 0]])  # no neighbour within CHGNet's cutoff
    overlapping = Structure(Lattice.cubic(3.0), ["Mg", "O"], [[0, 0, 0], [0, 0, 0]])
    inputs = [rattled("mp-550206"), isolated, rattled("mp-1008634"), overlapping, rattled("mp-555891")]
    results = relax_batch(inputs, chgnet, RelaxSettings(steps=3), batch_size=4)
    assert [r.status for r in results][1::2] == ["failed", "failed"]
    assert "isolated atom" in results[1].reason
    assert "closer than" in results[3].reason
    for structure, result in zip(inputs[::2], results[::2], strict=True):
        assert result.status in ("converged", "unconverged")
        assert result.structure.composition == structure.composition


@pytest.fixture(scope="module")
def seven_net() -> Potential:
    return load_potential("sevenn:7net-0")


def test_sevenn_passes_the_model_check_on_the_mp2020_scale(seven_net):
    """Its raw energies are GGA/GGA+U (MnO2 about 1 eV/atom above MP's); MP2020's correction brings them within
    the check's tolerance, and the potential says so, with the hash of the weights it loaded."""
    import sevenn._const

    report = check_potential(seven_net)
    assert report.passed and report.max_abs_error < 0.05
    assert seven_net.energy_correction.startswith("MaterialsProject2020Compatibility")
    shipped = Path(sevenn._const.SEVENNET_0_11Jul2024).read_bytes()
    assert seven_net.checkpoint_sha256 == hashlib.sha256(shipped).hexdigest()
    assert seven_net.checkpoint_sha256[:12] in seven_net.version
    chgnet = load_potential("chgnet")  # trained on MP2020-corrected energies: nothing to add
    assert chgnet.energy_correction is None and len(chgnet.checkpoint_sha256) == 64


def test_sevenn_batches_its_own_numbers_plus_the_correction(seven_net):
    from pymatgen.io.ase import AseAtomsAdaptor

    from registry.science.corrections import mp2020_correction_per_atom

    structures = [rattled(m) for m in ("mp-510408", "mp-1008634")]
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
    batched = seven_net.evaluate(atoms)
    for a, s, ev in zip(atoms, structures, batched, strict=True):
        a.calc = seven_net.calculator()  # sevenn's own ASE calculator: raw energies
        assert ev.energy == pytest.approx(a.get_potential_energy() + mp2020_correction_per_atom(s) * len(a), abs=1e-4)
        np.testing.assert_allclose(ev.forces, a.get_forces(), atol=1e-5)
        np.testing.assert_allclose(ev.stress, a.get_stress(), atol=1e-6)


def test_relaxing_with_sevenn_lowers_the_energy(seven_net):
    result = relax(rattled("mp-510408"), seven_net, RelaxSettings(steps=60))
    assert result.status == "converged"
    assert result.final_energy_per_atom < result.initial_energy_per_atom
    assert result.final_energy_per_atom == pytest.approx(-8.128, abs=0.05)  # MP2020-compatible, MP's relaxation


def test_a_file_that_is_not_a_sevenn_checkpoint_is_refused_in_one_line(tmp_path):
    import torch

    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    code = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), code)  # a pickle that names a class: never unpickled
    for path, why in ((text, "torch cannot read it"), (other, "no SevenNet config"),
                      (code, "it names torch.nn.modules.linear.Linear")):
        with pytest.raises(PotentialLoadError, match=f"is not a SevenNet checkpoint: {why}") as refused:
            load_potential(f"sevenn:{path}")
        assert "\n" not in str(refused.value)
    with pytest.raises(PotentialLoadError, match="neither a SevenNet model shipped"):
        load_potential(f"sevenn:{tmp_path / 'missing.pth'}")


def test_a_sevenn_checkpoint_with_broken_weights_fails_the_model_check(tmp_path):
    """A real SevenNet checkpoint whose linear weights are halved loads, and the model check refuses it in one line."""
    import io

    import sevenn._const
    import torch

    from registry.science.potentials import _numpy_globals

    with torch.serialization.safe_globals(_numpy_globals()):
        raw = torch.load(io.BytesIO(Path(sevenn._const.SEVENNET_0_11Jul2024).read_bytes()),
                         map_location="cpu", weights_only=True)
    raw["model_state_dict"] = {k: v / 2 if k.endswith("linear.weight") else v for k, v in raw["model_state_dict"].items()}
    path = tmp_path / "halved.pth"
    torch.save(raw, path)
    broken = load_potential(f"sevenn:{path}")
    with pytest.raises(ModelCheckError, match=r"SevenNet halved.pth .* fails the model check") as refused:
        check_potential(broken)
    assert "\n" not in str(refused.value)
