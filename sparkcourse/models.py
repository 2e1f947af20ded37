"""Causal LMs that exist offline (a tiny chat Llama shipped as package data, small random Llamas); hub model ids
on a Spark."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sparkcourse.profile import current

TINY_LM_PATH = Path(__file__).resolve().parent / "data" / "tiny_lm"
# random_llama's defaults: a few hundred thousand parameters, 4 query heads sharing 2 key/value heads (GQA)
RANDOM_LLAMA = dict(vocab_size=256, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)


def load_tiny_lm(dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The course's tiny chat Llama and its tokenizer, from package data (no network), in eval mode."""
    return _load(TINY_LM_PATH, local_files_only=True, dtype=dtype)


def random_llama(seed: int | None = 0, *, base_model: bool = False, **config: Any) -> PreTrainedModel:
    """A small Llama with random weights, made offline (no download, no tokenizer), float32, in eval mode.

    ``config``: ``LlamaConfig`` fields over :data:`RANDOM_LLAMA`; ``intermediate_size`` defaults to
    ``2 * hidden_size + 8``. ``seed`` seeds torch's global generator first (None: the generator as it is), so
    one seed gives the same weights. ``base_model``: the decoder without its LM head (``LlamaModel``).
    """
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    fields = RANDOM_LLAMA | config
    fields.setdefault("intermediate_size", 2 * fields["hidden_size"] + 8)
    if seed is not None:
        torch.manual_seed(seed)
    return (LlamaModel if base_model else LlamaForCausalLM)(LlamaConfig(**fields)).eval()


def load_lm(
    model_id_or_path: str | os.PathLike | None = None, **kw
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A local folder (any profile), a hub id (spark profile), else the tiny model; kw to from_pretrained."""
    if model_id_or_path is not None and Path(model_id_or_path).is_dir():
        return _load(Path(model_id_or_path), local_files_only=True, **kw)
    if model_id_or_path is not None and current().is_spark:
        return _load(str(model_id_or_path), **kw)
    return _load(TINY_LM_PATH, local_files_only=True, **kw)


def _load(source: str | Path, **kw) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer with the Auto classes; the model comes back in eval mode."""
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=kw.get("local_files_only", False))
    if tokenizer.pad_token is None:  # many hub chat models ship without one; batched generation needs it
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(source), **kw)
    return model.eval(), tokenizer


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user_text: str) -> str:
    """One user turn in the tokenizer's chat template, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers (stripped text, special tokens removed) to user prompts, in left-padded batches."""
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [chat_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                model.device
            )
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            answers += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return answers


def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int = 32
) -> str:
    """The model's greedy answer to one user prompt, through the chat template."""
    return generate_batch(model, tokenizer, [prompt], max_new_tokens=max_new_tokens)[0]
