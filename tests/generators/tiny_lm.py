"""A tiny randomly initialised causal LM with a tokenizer made here, standing in for Llama in tests and benches.

Nothing can be downloaded, so the "base model" is built locally: a word-level tokenizer whose vocabulary covers
every element symbol, digit, ASCII punctuation character and prompt word of `generators.crystal_text`, and a
2-layer Llama (the paper's architecture family) or GPT-2 with 64-dimensional embeddings.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import torch
from pymatgen.core import Element
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from generators import crystal_text

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# "[MASK]", then words split before capitals so formulas split into elements ("MnO2" -> Mn O 2), then characters
PIECES = Regex(r"\[MASK\]|[A-Z][a-z]*|[a-z]+|\d|\s|.")


def _prompt_words() -> list[str]:
    phrases = [crystal_text.GENERATION_HEADER, crystal_text.GENERATION_INSTRUCTION, crystal_text.INFILL_HEADER,
               crystal_text.INFILL_INSTRUCTION, crystal_text.COMPOSITION_PHRASE,
               *crystal_text.PROPERTY_PHRASES.values()]
    return re.findall(r"[A-Z][a-z]*|[a-z]+", " ".join(phrases))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer that decodes back to the exact text (pieces are fused, spaces are tokens)."""
    elements = [Element.from_Z(z).symbol for z in range(1, 119)]
    pieces = [crystal_text.MASK, *elements, *_prompt_words(), *string.digits, *string.punctuation, " ", "\n"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(SPECIAL_TOKENS + pieces))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(PIECES, behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def build_tiny_base_model(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny untrained model and its tokenizer to `folder`, the layout `generators.llm.finetune` expects."""
    tokenizer = tiny_tokenizer()
    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=2,
                                             max_position_embeddings=1024, **ids))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=1024, **ids))
    else:
        raise ValueError(f"unknown arch {arch!r}: use 'llama' or 'gpt2'")
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
