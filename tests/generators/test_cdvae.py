"""Importing CDVAE sampler output: both file layouts, a reason for every bad sample, stable ids, element filters."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from generators.cdvae import CDVAESamples, ElementFilter
from registry.io.records import Record
from tests.paths import require

PAPER = "gaibm_2410.06433"


FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def rocksalt(cation: str, anion: str, a: float) -> Structure:
    """The conventional 8-atom cell."""
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, FCC + [[x + 0.5, y, z] for x, y, z in FCC])


@pytest.fixture
def structures() -> list[Structure]:
    """Two oxides and a chloride, one of them in a non-orthogonal cell."""
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0]])
    monoclinic = Structure(Lattice.from_parameters(5.0, 5.5, 6.0, 90, 100, 90), ["Mg", "O"],
                           [[0.1, 0.2, 0.3], [0.6, 0.7, 0.8]])
    return [rutile, rocksalt("Na", "Cl", 5.64), monoclinic]


def cdvae_arrays(structures: list[Structure], num_evals: int | None = 1) -> dict[str, np.ndarray]:
    """What CDVAE's sampler writes for these structures, repeated over `num_evals` (None: the axis dropped)."""
    arrays = {
        "frac_coords": np.concatenate([s.frac_coords for s in structures]).astype(np.float32),
        "atom_types": np.array([site.specie.Z for s in structures for site in s], dtype=np.int64),
        "lengths": np.array([s.lattice.abc for s in structures], dtype=np.float32),
        "angles": np.array([s.lattice.angles for s in structures], dtype=np.float32),
        "num_atoms": np.array([len(s) for s in structures], dtype=np.int64),
    }
    return arrays if num_evals is None else {k: np.stack([v] * num_evals) for k, v in arrays.items()}


def save_pt(path: Path, arrays: dict[str, np.ndarray], **extra: object) -> Path:
    torch.save({**{k: torch.from_numpy(v) for k, v in arrays.items()}, **extra}, path)
    return path


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def same_structure(a: Structure, b: Structure) -> bool:
    return (a.species == b.species and np.allclose(a.lattice.parameters, b.lattice.parameters, atol=1e-4)
            and np.allclose(a.frac_coords, b.frac_coords, atol=1e-6))


def test_pt_with_eval_axis_and_npz_without_give_the_same_structures(tmp_path, structures):
    settings = argparse.Namespace(model_path="/runs/hydra/singlerun/2024-08-29/custom", num_evals=1)
    pt = save_pt(tmp_path / "eval_gen.pt", cdvae_arrays(structures), eval_setting=settings, time=12.5)
    npz = save_npz(tmp_path / "eval_gen.npz", cdvae_arrays(structures, num_evals=None))

    from_pt, from_npz = CDVAESamples(pt), CDVAESamples(npz)
    pt_records = list(from_pt.generate(from_pt.run_id()))
    npz_records = list(from_npz.generate(from_npz.run_id()))

    assert len(pt_records) == len(npz_records) == len(structures)
    for original, a, b in zip(structures, pt_records, npz_records, strict=True):
        assert same_structure(a.structure, original) and same_structure(b.structure, original)
    assert from_pt.version == "2024-08-29/custom" and from_npz.version == "unknown"
    origin = pt_records[2].origin
    assert origin.kind == "generated" and origin.source == "cdvae" and origin.generator == "cdvae"
    assert origin.source_id == f"{from_pt.run_id()}:0:2" and origin.row == 2 and origin.file == str(pt)
    assert origin.parameters["file_sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest()
    assert origin.parameters["sampler"]["sampling_time_s"] == 12.5


def test_every_eval_of_a_multi_eval_file_is_read(tmp_path, structures):
    path = save_npz(tmp_path / "gen.npz", cdvae_arrays(structures, num_evals=2))
    generator = CDVAESamples(path)
    run_id = generator.run_id()
    ids = [r.origin.source_id for r in generator.generate(run_id)]
    assert ids == [f"{run_id}:{e}:{i}" for e in range(2) for i in range(3)]


def test_bad_samples_become_rejects_with_reasons_and_the_rest_still_parse(tmp_path, structures):
    rutile, nacl = cdvae_arrays(structures[:1], None), cdvae_arrays(structures[1:2], None)
    arrays = {  # rutile, an empty sample, atom types 0 and 104, oxygen in a NaN cell, NaCl, one atom too many
        "num_atoms": np.array([6, 0, 1, 1, 1, 8, 1]),
        "atom_types": np.concatenate([rutile["atom_types"], [0, 104, 8], nacl["atom_types"]]),
        "frac_coords": np.concatenate([rutile["frac_coords"], np.zeros((3, 3)), nacl["frac_coords"]]),
        "lengths": np.array([rutile["lengths"][0], *[[3, 3, 3]] * 3, [np.nan, 3, 3], nacl["lengths"][0], [3, 3, 3]]),
        "angles": np.array([rutile["angles"][0], *[[90, 90, 90]] * 4, nacl["angles"][0], [90, 90, 90]]),
    }
    generator = CDVAESamples(save_npz(tmp_path / "bad.npz", arrays))
    records = list(generator.generate(generator.run_id()))
    reasons = [r.reason for r in records]

    assert same_structure(records[0].structure, structures[0]) and same_structure(records[5].structure, structures[1])
    assert "sample has 0 atoms" in reasons[1]
    assert "atom types outside 1..103: [0]" in reasons[2]
    assert "atom types outside 1..103: [104]" in reasons[3]
    assert "non-finite" in reasons[4]
    assert "truncated file" in reasons[6] and "atoms 17..17" in reasons[6]
    assert all(json.loads(r.raw)["sample"] == i for i, r in enumerate(records) if r.structure is None)
    counts = generator.counts
    assert (counts.samples, counts.parsed, counts.rejected, counts.filtered) == (7, 2, 5, 0)


def test_a_sample_without_a_lattice_row_is_rejected_as_truncated(tmp_path, structures):
    arrays = cdvae_arrays(structures[:2])
    arrays["angles"] = arrays["angles"][:, :1]  # the file ends before the second sample's angles
    generator = CDVAESamples(save_pt(tmp_path / "eval_gen.pt", arrays))
    records = list(generator.generate(generator.run_id()))
    assert records[0].structure is not None
    assert records[1].structure is None and "no lattice" in records[1].reason


@pytest.mark.parametrize("content, match", [
    ({"frac_coords": torch.zeros(1, 3, 3)}, "missing atom_types"),
    (["not", "a", "dict"], "holds a list"),
])
def test_a_torch_file_that_is_not_cdvae_output_is_refused(tmp_path, content, match):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=match):
        CDVAESamples(path)


def test_wrong_ranks_unknown_suffix_and_garbage_are_refused(tmp_path, structures):
    arrays = cdvae_arrays(structures)
    arrays["lengths"] = arrays["lengths"][0]  # the other arrays keep their num_evals axis
    with pytest.raises(ValueError, match="lengths has shape"):
        CDVAESamples(save_npz(tmp_path / "ranks.npz", arrays))
    csv = tmp_path / "samples.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="unknown file type .csv"):
        CDVAESamples(csv)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file")
    with pytest.raises(ValueError, match="expected CDVAE sampler output"):
        CDVAESamples(garbage)
    single = tmp_path / "single.npz"
    with open(single, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(ValueError, match="a single array"):
        CDVAESamples(single)
    objects = tmp_path / "objects.npz"
    np.savez(objects, **{**cdvae_arrays(structures), "lengths": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="without pickled objects"):
        CDVAESamples(objects)


class _Payload:
    """Unpickling this would create a file: a stand-in for code hidden in a checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path, structures):
    marker = tmp_path / "ran"
    path = save_pt(tmp_path / "eval_gen.pt", cdvae_arrays(structures), eval_setting=_Payload(marker))
    with pytest.raises(ValueError, match="refused to load"):
        CDVAESamples(path)
    assert not marker.exists()


def test_oxide_filter_keeps_only_structures_with_oxygen_and_counts_the_rest(tmp_path, structures):
    generator = CDVAESamples(save_npz(tmp_path / "gen.npz", cdvae_arrays(structures)),
                             elements=ElementFilter.named("oxides"))
    records = list(generator.generate(generator.run_id()))
    assert [r.origin.row for r in records] == [0, 2]
    assert all("O" in r.structure.composition for r in records)
    assert (generator.counts.samples, generator.counts.parsed, generator.filtered) == (3, 2, 1)


@pytest.mark.parametrize("element_filter, kept", [
    (ElementFilter(all_of={"Ti", "O"}), [0]),
    (ElementFilter(any_of={"Mg", "Na"}), [1, 2]),
    (ElementFilter(exclude={"Ti"}), [1, 2]),
    (ElementFilter(all_of={"O"}, exclude={"Mg"}), [0]),
])
def test_general_element_filter(tmp_path, structures, element_filter, kept):
    generator = CDVAESamples(save_npz(tmp_path / "gen.npz", cdvae_arrays(structures)), elements=element_filter)
    assert [r.origin.row for r in generator.generate(generator.run_id())] == kept


def test_element_filter_refuses_unknown_symbols_and_contradictions():
    with pytest.raises(ValueError, match="Xx"):
        ElementFilter(any_of={"Xx"})
    with pytest.raises(ValueError, match="both required and excluded: O"):
        ElementFilter(all_of={"O"}, exclude={"O"})
    with pytest.raises(ValueError, match="unknown filter 'sulfides'"):
        ElementFilter.named("sulfides")


def test_reimport_slices_and_filters_keep_the_run_id_and_sample_ids(tmp_path, structures):
    path = save_npz(tmp_path / "gen.npz", cdvae_arrays(structures))
    copy = save_npz(tmp_path / "copy.npz", cdvae_arrays(structures))

    def ids(generator: CDVAESamples) -> dict[int, str]:
        return {r.origin.row: r.origin.source_id for r in generator.generate(generator.run_id())}

    full = ids(CDVAESamples(path))
    assert ids(CDVAESamples(path)) == full
    assert CDVAESamples(copy).run_id() == CDVAESamples(path).run_id()  # same bytes, another place
    assert ids(CDVAESamples(path, offset=1, limit=1)) == {1: full[1]}
    assert ids(CDVAESamples(path, elements=ElementFilter.named("oxides"))) == {0: full[0], 2: full[2]}
    sliced = CDVAESamples(path, offset=1, limit=1)
    assert sliced.parameters()["offset"] == 1 and sliced.run_id() == CDVAESamples(path).run_id()

    changed = cdvae_arrays(structures)
    changed["lengths"][0, 0, 0] += 0.1
    assert CDVAESamples(save_npz(tmp_path / "changed.npz", changed)).run_id() != CDVAESamples(path).run_id()


def test_the_papers_samples_all_parse(shared_data):
    """The 10,000 samples released with arXiv 2410.06433 (SOURCES.md section 3), and the .pt agrees with the .npz."""
    npz = CDVAESamples(shared_data / PAPER / "eval_gen_arrays.npz")
    records: list[Record] = list(npz.generate(npz.run_id()))
    assert len(records) == 10_000 and npz.counts.rejected == 0
    assert sum(len(r.structure) for r in records) == 100_185
    assert sum("O" in r.structure.composition for r in records) == 2_933

    pt = CDVAESamples(require(shared_data / PAPER / "eval_gen.pt"), offset=9_990)
    tail = list(pt.generate(pt.run_id()))
    assert [r.origin.row for r in tail] == list(range(9_990, 10_000))
    assert all(same_structure(a.structure, b.structure) for a, b in zip(tail, records[9_990:], strict=True))
    assert pt.parameters()["sampler"]["num_evals"] == 1
