"""A causal language model fine-tuned on crystals as text, and a generator that samples crystals from it.

This follows the paper's LLM route (arXiv 2410.06433: Llama 3.1 8B + LoRA on crystal-text-llm text). Training texts
are built as crystal-text-llm does: a fresh random translation of every structure at every use, two thirds
generation prompts (conditioned on a random subset of the chosen conditions, so the model also learns to generate
unconditionally) and one third infill prompts, with the loss on the whole text.

Saved models are always complete and merged: LoRA weights are folded into the base before saving, so a model
folder alone reproduces its samples (no base folder or peft needed to load it, and no drift if the base moves).
The price is a full-size copy per fine-tune (16 GB in bf16 for an 8B model). Everything is loaded from local
folders with `trust_remote_code=False`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from pydantic import BaseModel, Field
from pymatgen.core import Composition, Structure
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, get_cosine_schedule_with_warmup
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from generators.base import Generator
from generators.crystal_text import (
    PROPERTY_PHRASES,
    CrystalTextError,
    generation_prompt,
    infill_prompt,
    structure_to_text,
    text_to_structure,
)
from registry.io.records import Record
from schemas.structure import Origin, OriginKind

CARD_FILE = "model_card.json"
CONDITIONS = ("composition", *PROPERTY_PHRASES)
LIBRARIES = ("torch", "transformers", "peft", "tokenizers", "pymatgen")
WARMUP_FRACTION = 0.03
LORA_DROPOUT = 0.05


class ModelCard(BaseModel):
    """What a fine-tuned model was made from and how, saved next to its weights as `model_card.json`."""

    base_model: str = Field(description="Resolved path of the base model folder")
    base_config_sha256: str = Field(description="Hash of the base's config.json, to recognise the base if moved")
    data_query: str | dict[str, Any] | None = Field(description="How the caller selected the training structures")
    n_structures: int = Field(description="Structures passed in")
    n_used: int = Field(description="Structures that could be written as text and were trained on")
    skipped: dict[str, int] = Field(description="Reasons structures were not used, with counts")
    n_examples: int = Field(description="Training texts seen: n_used x epochs")
    n_infill: int = Field(description="Of which infill texts")
    n_truncated: int = Field(description="Texts cut at max_length (they lose their end-of-sequence token)")
    hyperparameters: dict[str, Any]
    steps: int
    train_loss_final: float = Field(description="Mean token loss over the last epoch")
    loss_per_epoch: list[float]
    step_time_s: float = Field(description="Mean wall time of one optimiser step")
    libraries: dict[str, str]
    started_at: datetime
    finished_at: datetime
    weights_sha256: str = Field(description="Hash of the saved safetensors files")

    @property
    def version(self) -> str:
        """Changes whenever the weights do, and sorts by training time."""
        return f"{self.finished_at:%Y%m%dT%H%M%SZ}-{self.weights_sha256[:12]}"

    def save(self, folder: Path) -> None:
        (folder / CARD_FILE).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, folder: Path) -> ModelCard:
        path = Path(folder) / CARD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a fine-tuned model folder: it has no {CARD_FILE}")
        return cls.model_validate_json(path.read_text())


def finetune(
    base: Path,
    structures: Sequence[tuple[Structure, Mapping[str, Any]]],
    out: Path,
    *,
    epochs: int = 3,
    lr: float = 2e-4,
    batch_size: int = 4,
    max_length: int = 1024,
    lora: bool = True,
    lora_r: int = 8,
    lora_alpha: int = 32,
    infill_fraction: float = 1 / 3,
    seed: int = 0,
    conditioning: Sequence[str] = ("composition",),
    data_query: str | dict[str, Any] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> ModelCard:
    """Fine-tune the causal LM in `base` on (structure, properties) pairs and save the merged model to `out`.

    `conditioning` names what prompts may state: "composition" and property keys of the dicts
    (formation_energy_per_atom, band_gap, e_above_hull, spacegroup.number). Structures whose text would not parse
    back (disordered, unphysical) are skipped and counted in the card rather than failing the run.
    """
    unknown = [c for c in conditioning if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditioning {unknown}; known: {', '.join(CONDITIONS)}")
    if min(epochs, batch_size, max_length) < 1:
        raise ValueError(f"epochs, batch_size and max_length must be positive: {epochs}, {batch_size}, {max_length}")
    if not 0 <= infill_fraction <= 1:
        raise ValueError(f"infill_fraction must lie in [0, 1], got {infill_fraction}")
    out = Path(out)
    if (out / CARD_FILE).exists():
        raise FileExistsError(f"{out} already holds a fine-tuned model; choose a new folder")
    started_at = datetime.now(UTC)
    used, skipped = _usable(structures)
    if not used:
        raise ValueError(f"none of the {len(structures)} structures can be trained on: {dict(skipped)}")

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, model = _load(Path(base))
    if lora:
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=lora_r, lora_alpha=lora_alpha,
                                                 lora_dropout=LORA_DROPOUT))
    model.to(device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    steps = epochs * math.ceil(len(used) / batch_size)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_FRACTION * steps), steps)

    n_infill = n_truncated = 0
    loss_per_epoch: list[float] = []
    step_times: list[float] = []
    bar = tqdm(total=steps, desc="fine-tune", disable=not progress)
    for _ in range(epochs):
        losses = []
        order = rng.permutation(len(used))
        for start in range(0, len(order), batch_size):
            texts, infill = zip(*(_training_text(*used[i], conditioning, infill_fraction, rng)
                                  for i in order[start:start + batch_size]), strict=True)
            n_infill += sum(infill)
            batch, truncated = _batch(tokenizer, texts, max_length)
            n_truncated += truncated
            tic = time.perf_counter()
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step_times.append(time.perf_counter() - tic)
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        loss_per_epoch.append(float(np.mean(losses)))
    bar.close()

    if lora:
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = ModelCard(
        base_model=str(Path(base).resolve()),
        base_config_sha256=hashlib.sha256((Path(base) / "config.json").read_bytes()).hexdigest(),
        data_query=data_query,
        n_structures=len(structures),
        n_used=len(used),
        skipped=dict(skipped),
        n_examples=len(used) * epochs,
        n_infill=n_infill,
        n_truncated=n_truncated,
        hyperparameters={
            "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length, "lora": lora,
            "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": LORA_DROPOUT,
            "infill_fraction": infill_fraction, "seed": seed, "conditioning": list(conditioning),
            "schedule": f"cosine, {WARMUP_FRACTION:.0%} warmup", "grad_clip": 1.0, "device": device,
        },
        steps=steps,
        train_loss_final=loss_per_epoch[-1],
        loss_per_epoch=loss_per_epoch,
        step_time_s=float(np.mean(step_times)),
        libraries={name: package_version(name) for name in LIBRARIES},
        started_at=started_at,
        finished_at=datetime.now(UTC),
        weights_sha256=_weights_hash(out),
    )
    card.save(out)
    return card


class LLMGenerator(Generator):
    """Samples crystals from a fine-tuned model folder; every sample becomes a Record, parsed or rejected.

    Samples are deterministic for a given seed and batch size (each batch reseeds torch with seed + its first
    index), on the same hardware and library versions.
    """

    name = "llm"

    def __init__(
        self,
        model_dir: Path,
        n: int,
        prompt: str | None = None,
        composition: Composition | str | None = None,
        properties: Mapping[str, float] | None = None,
        temperature: float = 1.0,
        top_p: float = 0.9,
        max_new_tokens: int = 512,
        seed: int = 0,
        batch_size: int = 8,
        device: str | None = None,
    ) -> None:
        if prompt is not None and (composition is not None or properties):
            raise ValueError("give either a prompt or composition/properties to build one, not both")
        if n < 1 or batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"n, batch_size and max_new_tokens must be positive, got {n}, {batch_size}, "
                             f"{max_new_tokens}")
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
        self.model_dir = Path(model_dir)
        self.card = ModelCard.load(self.model_dir)
        # the model's version, not this code's: a new fine-tune is a new run
        self.version = self.card.version  # type: ignore[misc]
        self.n = n
        self.prompt = prompt if prompt is not None else generation_prompt(composition, properties)
        self.composition = None if composition is None else Composition(composition).reduced_formula
        self.properties = dict(properties or {})
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def parameters(self) -> dict[str, Any]:
        return {
            "model": self.model_dir.name, "model_version": self.version, "n": self.n, "prompt": self.prompt,
            "composition": self.composition, "properties": self.properties, "temperature": self.temperature,
            "top_p": self.top_p, "max_new_tokens": self.max_new_tokens, "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def generate(self, run_id: str) -> Iterator[Record]:
        tokenizer, model = _load(self.model_dir)
        model.to(self.device).eval()
        encoded = tokenizer(self.prompt, return_tensors="pt").to(self.device)
        prompt_length = encoded["input_ids"].shape[1]
        for start in range(0, self.n, self.batch_size):
            size = min(self.batch_size, self.n - start)
            torch.manual_seed(self.seed + start)
            with torch.no_grad():
                sequences = model.generate(
                    input_ids=encoded["input_ids"].repeat(size, 1),
                    attention_mask=encoded["attention_mask"].repeat(size, 1),
                    do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )
            for offset, tokens in enumerate(sequences[:, prompt_length:].tolist()):
                yield self._record(run_id, start + offset, tokens, tokenizer)

    def _record(self, run_id: str, index: int, tokens: list[int], tokenizer: PreTrainedTokenizerBase) -> Record:
        origin = Origin(kind=OriginKind.generated, source="llm", source_id=f"{run_id}:{index}",
                        generator=self.model_dir.name, version=self.version, run_id=run_id,
                        parameters=self.parameters())
        finished = tokenizer.eos_token_id in tokens
        if finished:
            tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
        text = tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if not finished:
            return Record.reject(origin, f"sample did not end within max_new_tokens={self.max_new_tokens}", text)
        try:
            return Record(origin=origin, structure=text_to_structure(text), raw=text)
        except CrystalTextError as exc:
            return Record.reject(origin, str(exc), text)


def _load(folder: Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model from a local folder only, never running code shipped with the weights."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {folder} has no end-of-sequence token; samples could never end")
    if tokenizer.pad_token_id is None:  # Llama tokenizers have none; padding is masked out, so any id works
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    return tokenizer, model


def _usable(
    structures: Sequence[tuple[Structure, Mapping[str, Any]]],
) -> tuple[list[tuple[Structure, Mapping[str, Any]]], Counter[str]]:
    """Structures whose text parses back: the model should never be taught text the parser refuses."""
    used: list[tuple[Structure, Mapping[str, Any]]] = []
    skipped: Counter[str] = Counter()
    for structure, properties in structures:
        try:
            text_to_structure(structure_to_text(structure, translate=False))
        except CrystalTextError as exc:
            skipped[str(exc)] += 1
        else:
            used.append((structure, properties))
    return used, skipped


def _training_text(
    structure: Structure,
    properties: Mapping[str, Any],
    conditioning: Sequence[str],
    infill_fraction: float,
    rng: np.random.Generator,
) -> tuple[str, bool]:
    """One training text (prompt + answer) and whether it is an infill text."""
    text = structure_to_text(structure, rng=rng)
    if rng.random() < infill_fraction:
        element = str(rng.choice([site.specie.symbol for site in structure]))  # by site, as crystal-text-llm
        return infill_prompt(text, element) + element, True
    known = {key: _number(properties.get(key)) for key in conditioning if key != "composition"}
    available = [c for c in conditioning if c == "composition" or known[c] is not None]
    chosen = [str(c) for c in rng.permutation(available)[: rng.integers(0, len(available) + 1)]] if available else []
    prompt = generation_prompt(structure.composition if "composition" in chosen else None,
                               {c: known[c] for c in chosen if c != "composition"})
    return prompt + text, False


def _number(value: Any) -> float | None:
    """A property value usable in a prompt, or None when missing, NaN or not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _batch(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> tuple[dict[str, torch.Tensor], int]:
    """Right-padded ids ending in EOS, with labels masked on padding; and how many texts were cut."""
    rows = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in texts]
    truncated = sum(len(row) > max_length for row in rows)
    rows = [row[:max_length] for row in rows]
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}, truncated


def _weights_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
