"""Fine-tuning a (tiny, locally built) causal LM on crystal text and sampling Records from it, end to end."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from generators.crystal_text import structure_to_text
from generators.llm import CARD_FILE, LLMGenerator, ModelCard, finetune
from schemas.structure import OriginKind
from tests.generators.tiny_lm import build_tiny_base_model

PROPERTIES = ["formation_energy_per_atom", "band_gap", "e_above_hull"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """A 64-wide model spends more time in thread hand-offs than in arithmetic; one thread is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def training_set(shared_data: Path) -> list[tuple[Structure, dict]]:
    """Six small MP-20 structures with their properties, then two that must be skipped: disordered and crowded."""
    rows = pd.read_csv(shared_data / "mp20_sample" / "train.csv").head(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen notes the CIF coordinates it snaps to ideal values
        pairs = [(Structure.from_str(row.cif, fmt="cif"), {p: getattr(row, p) for p in PROPERTIES})
                 for row in rows.itertuples()]
    small = [pair for pair in pairs if len(pair[0]) <= 8][:6]
    disordered = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    crowded = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    return [*small, (disordered, {"band_gap": 0.0}), (crowded, {})]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, training_set: list[tuple[Structure, dict]]) -> Path:
    base = build_tiny_base_model(tmp_path_factory.mktemp("base"))
    out = tmp_path_factory.mktemp("models") / "tiny-llama-lora"
    finetune(base, training_set, out, epochs=2, lr=1e-3, batch_size=4, max_length=512, lora_r=4, seed=0,
             conditioning=("composition", "band_gap"), data_query={"source": "mp20_sample", "rows": 30},
             progress=False)
    return out


def test_model_card_counts_what_was_trained(model_dir: Path, training_set: list) -> None:
    card = ModelCard.load(model_dir)
    assert card.n_structures == len(training_set) == 8
    assert card.n_used == 6 and sum(card.skipped.values()) == 2
    assert any("disordered" in reason for reason in card.skipped)
    assert any("atoms closer than 0.5" in reason for reason in card.skipped)
    assert card.n_examples == 12 and card.steps == 4 and 0 <= card.n_infill <= 12
    assert card.data_query == {"source": "mp20_sample", "rows": 30}
    assert card.hyperparameters["lora"] and card.hyperparameters["conditioning"] == ["composition", "band_gap"]
    assert math.isfinite(card.train_loss_final) and len(card.loss_per_epoch) == 2
    assert set(card.libraries) >= {"torch", "transformers", "peft"}
    assert card.finished_at >= card.started_at and card.version.endswith(card.weights_sha256[:12])


def test_saved_model_is_merged_and_self_contained(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {CARD_FILE, "config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names


def test_every_sample_becomes_a_record(model_dir: Path) -> None:
    generator = LLMGenerator(model_dir, n=5, composition="Mn4O8", properties={"band_gap": 0.5},
                             max_new_tokens=60, batch_size=2)
    run_id = generator.run_id()
    records = list(generator.generate(run_id))
    assert len(records) == 5
    for i, record in enumerate(records):
        assert (record.structure is None) != (record.reason is None)
        assert record.raw is not None
        assert record.origin.kind == OriginKind.generated and record.origin.source == "llm"
        assert record.origin.source_id == f"{run_id}:{i}" and record.origin.generator == "tiny-llama-lora"
        assert record.origin.version == ModelCard.load(model_dir).version
    assert "The chemical formula is MnO2. The band gap is 0.5. " in records[0].origin.parameters["prompt"]


def test_sampling_is_deterministic_under_a_seed(model_dir: Path) -> None:
    def raws(seed: int) -> list[str | None]:
        generator = LLMGenerator(model_dir, n=3, max_new_tokens=40, seed=seed, batch_size=2)
        return [record.raw for record in generator.generate(generator.run_id())]

    first = raws(seed=7)
    assert raws(seed=7) == first
    assert raws(seed=8) != first


def test_finished_samples_are_parsed_and_unfinished_ones_rejected(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    generator = LLMGenerator(model_dir, n=1, max_new_tokens=200)
    rocksalt = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    tokens = tokenizer(structure_to_text(rocksalt, rng=np.random.default_rng(0)))["input_ids"]
    eos = tokenizer.eos_token_id
    parsed = generator._record("run", 0, [*tokens, eos, *tokens], tokenizer)
    assert parsed.structure is not None and parsed.structure.composition.reduced_formula == "MgO"
    cut = generator._record("run", 1, tokens[:-3], tokenizer)
    assert cut.structure is None and "did not end within max_new_tokens=200" in cut.reason
    junk = generator._record("run", 2, [*tokens[:8], eos], tokenizer)
    assert junk.structure is None and "at least one site" in junk.reason and junk.raw


def test_full_finetune_of_gpt2_on_infill_texts_lowers_the_loss(tmp_path: Path, training_set: list) -> None:
    base = build_tiny_base_model(tmp_path / "base", arch="gpt2")
    card = finetune(base, training_set[:4], tmp_path / "ft", epochs=4, lr=3e-3, batch_size=4, lora=False,
                    infill_fraction=1.0, progress=False)
    assert card.n_infill == card.n_examples == 16
    assert card.loss_per_epoch[-1] < card.loss_per_epoch[0]


def test_bad_requests_are_refused_with_a_reason(model_dir: Path, tmp_path: Path, training_set: list) -> None:
    with pytest.raises(ValueError, match="unknown conditioning \\['density'\\]"):
        finetune(model_dir, training_set, tmp_path / "x", conditioning=("density",))
    with pytest.raises(FileExistsError, match="already holds a fine-tuned model"):
        finetune(model_dir, training_set, model_dir)
    with pytest.raises(ValueError, match="none of the 1 structures"):
        finetune(model_dir, training_set[-1:], tmp_path / "y")
    with pytest.raises(FileNotFoundError, match="no model_card.json"):
        LLMGenerator(tmp_path, n=1)
    with pytest.raises(ValueError, match="either a prompt or composition"):
        LLMGenerator(model_dir, n=1, prompt="Below", composition="MgO")
