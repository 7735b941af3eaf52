"""CDVAE's generation validity metrics: exact fractions on a hand-built run, and the paper's run."""

from __future__ import annotations

import json

import pytest
from pymatgen.core import Lattice, Structure

from generators.cdvae import CDVAESamples
from registry.io.records import Record
from registry.science.metrics import GenerationMetrics, GenerationTally
from schemas.structure import Origin
from tests.paths import require

FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def rocksalt(cation: str, anion: str, a: float) -> Structure:
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, FCC + [[x + 0.5, y, z] for x, y, z in FCC])


def record(structure: Structure | None, index: int) -> Record:
    origin = Origin(kind="generated", source="test", source_id=str(index))
    return Record(origin, structure) if structure is not None else Record.reject(origin, "unparseable sample")


def generation_metrics(records) -> GenerationMetrics:
    """CDVAE's validity figures of a run's records, as a generator run tallies them on the way."""
    tally = GenerationTally()
    for _ in tally.observe(records):
        pass
    return tally.result()


@pytest.fixture
def run() -> list[Record]:
    """3 valid crystals, NaCl with a Cl 0.3 Å from a Na (valid composition), and NaCl2 (no charge balance)."""
    overlapping = rocksalt("Na", "Cl", 5.64)
    overlapping.replace(4, "Cl", [0.3 / 5.64, 0, 0])
    nacl2 = Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    structures = [rocksalt("Na", "Cl", 5.64), rocksalt("Mg", "O", 4.21), cscl, overlapping, nacl2]
    return [record(s, i) for i, s in enumerate(structures)]


def test_fractions_of_a_hand_built_run(run):
    metrics = generation_metrics(run)
    assert (metrics.n_samples, metrics.n_comp_valid, metrics.n_struct_valid, metrics.n_valid) == (5, 4, 4, 3)
    assert (metrics.comp_valid, metrics.struct_valid, metrics.valid) == (0.8, 0.8, 0.6)
    assert metrics.n_elements == {2: 5}
    assert metrics.n_unique_formulas == 4  # NaCl twice


def test_rejected_samples_count_as_invalid_in_the_denominator(run):
    metrics = generation_metrics([*run, record(None, 5)])
    assert (metrics.n_samples, metrics.n_rejected) == (6, 1)
    assert (metrics.comp_valid, metrics.struct_valid, metrics.valid) == (4 / 6, 4 / 6, 3 / 6)


def test_tally_passes_records_through_and_matches_the_batch_figures(run):
    tally = GenerationTally()
    assert list(tally.observe(run)) == run
    result = tally.result()
    assert json.loads(json.dumps(result.as_dict()))["n_elements"] == {"2": 5}


def test_an_empty_run_has_zero_fractions():
    metrics = generation_metrics([])
    assert (metrics.n_samples, metrics.comp_valid, metrics.struct_valid, metrics.valid) == (0, 0.0, 0.0, 0.0)


# The paper's figures were computed with SMACT 2.3-2.5, where a missing Pauling electronegativity made the test
# raise and CDVAE counted the composition valid; SMACT >= 2.6 fails it instead. In these 10,000 samples that
# concerns 21 compositions with Pm, so comp_valid is 0.0021 lower here; the tolerance allows that and no more.
COMP_VALID_TOLERANCE = 0.0025


@pytest.mark.slow
def test_the_papers_run_reproduces_its_published_validity(shared_data):
    folder = shared_data / "gaibm_2410.06433"
    published = json.loads((folder / "eval_metrics.json").read_text())
    generator = CDVAESamples(require(folder / "eval_gen.pt"))
    metrics = generation_metrics(generator.generate(generator.run_id()))
    assert metrics.n_samples == 10_000 and metrics.n_rejected == 0
    assert metrics.struct_valid == pytest.approx(published["struct_valid"], abs=1e-9)
    assert metrics.comp_valid == pytest.approx(published["comp_valid"], abs=COMP_VALID_TOLERANCE)
    assert metrics.valid == pytest.approx(published["valid"], abs=COMP_VALID_TOLERANCE)
    assert metrics.comp_valid <= published["comp_valid"]  # the SMACT change only removes valid compositions
