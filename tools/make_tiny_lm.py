"""Build, pre-train and save the course's tiny offline chat LM, with its instruction and preference datasets.

Run from the repository root (CPU, a few minutes on 2 cores; seeds and thread count fixed):

    python tools/make_tiny_lm.py            # writes sparkcourse/data/instruct/ and sparkcourse/data/tiny_lm/
    python tools/make_tiny_lm.py --data-only

Steps: generate synthetic chat tasks (pre-training corpus, fine-tuning train/test splits, arithmetic
preferences) -> train a byte-level BPE tokenizer on that course text -> pre-train a tiny Llama on the
pre-training tasks with the loss on the assistant's answer -> measure exact match -> save with
``save_pretrained`` and write the README next to the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import string
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparkcourse.datasets_course import HELD_OUT_TASKS, PRETRAIN_TASKS  # noqa: E402

SEED = 0
LETTERS = string.ascii_lowercase
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# Facts a student meets in the course: (question, answer). Bits and bytes of number formats, the Spark.
FACTS = [
    *[(f"How many bits does {f} use?", str(b)) for f, b in
      [("FP64", 64), ("FP32", 32), ("TF32", 19), ("FP16", 16), ("BF16", 16), ("FP8", 8), ("FP4", 4),
       ("INT8", 8), ("INT4", 4), ("NF4", 4)]],
    *[(f"How many bytes does one {f} parameter take?", b) for f, b in
      [("FP32", "4"), ("FP16", "2"), ("BF16", "2"), ("FP8", "1"), ("INT8", "1"), ("FP4", "0.5"), ("INT4", "0.5")]],
    *[(f"How many exponent bits does {f} have?", str(b)) for f, b in
      [("FP32", 8), ("BF16", 8), ("FP16", 5), ("FP8 E4M3", 4), ("FP8 E5M2", 5)]],
    *[(f"How many mantissa bits does {f} have?", str(b)) for f, b in
      [("FP32", 23), ("BF16", 7), ("FP16", 10), ("FP8 E4M3", 3), ("FP8 E5M2", 2)]],
    ("How much memory does the DGX Spark have?", "128 GB"),
    ("What is the memory bandwidth of the DGX Spark?", "273 GB/s"),
    ("Which chip is in the DGX Spark?", "GB10"),
    ("Which GPU architecture does the DGX Spark use?", "Blackwell"),
    ("Which CPU does the DGX Spark use?", "Grace"),
]
# Mixture of the pre-training corpus (held-out tasks never appear in it).
PRETRAIN_MIX = {"add": 0.4, "reverse": 0.25, "upper": 0.25, "fact": 0.1}
N_RESERVED_PAIRS = 2000  # 2-digit operand pairs kept out of pre-training for evaluation and preferences


# ---------------------------------------------------------------- data


def spaced(word: str) -> str:
    """Letters separated by spaces, so the tokenizer gives one token per letter: ``cuda`` -> ``c u d a``."""
    return " ".join(word)


def make_example(task: str, item) -> dict[str, str]:
    """One instruction row ``{task, prompt, response}``; ``item`` is ``(a, b)``, a word or ``(question, answer)``."""
    if task == "add":
        a, b = item
        return {"task": task, "prompt": f"What is {a} + {b}?", "response": str(a + b)}
    if task == "add_json":
        a, b = item
        return {"task": task, "prompt": f"What is {a} + {b}? Answer in JSON.", "response": f'{{"answer": {a + b}}}'}
    if task == "reverse":
        return {"task": task, "prompt": f"Reverse: {spaced(item)}", "response": spaced(item[::-1])}
    if task == "upper":
        return {"task": task, "prompt": f"Uppercase: {spaced(item)}", "response": spaced(item.upper())}
    if task == "reverse_upper":
        return {"task": task, "prompt": f"Reverse and uppercase: {spaced(item)}", "response": spaced(item[::-1].upper())}
    if task == "fact":
        question, answer = item
        return {"task": task, "prompt": question, "response": answer}
    raise ValueError(f"unknown task {task!r}")


def wrong_sum(rng: random.Random, a: int, b: int) -> int:
    """A plausible wrong answer to ``a + b``: off by one, a dropped or doubled carry, or swapped digits."""
    s = a + b
    candidates = {s + 1, s - 1, s + 10, s - 10, int(str(s)[::-1])} - {s}
    return rng.choice(sorted(c for c in candidates if c >= 0))


def random_word(rng: random.Random) -> str:
    """A random lowercase word of 3 to 6 letters."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))


def make_splits(
    seed: int = SEED,
    n_pretrain: int = 60_000,
    n_train: int = 400,
    n_test: int = 100,
    n_pref_train: int = 400,
    n_pref_test: int = 100,
) -> dict[str, list[dict[str, str]]]:
    """All course data: ``pretrain`` corpus, instruction ``train``/``test``, ``preferences_train``/``_test``.

    Operand pairs and words of every evaluation row are kept out of pre-training; no prompt is in both a
    train and a test split. ``train`` holds ``n_train`` rows per held-out task plus a quarter as many
    replay rows per pre-training task; ``test`` holds ``n_test`` rows per task and every fact once.
    """
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(100) for b in range(100)]
    rng.shuffle(pairs)
    reserved, open_pairs = pairs[:N_RESERVED_PAIRS], pairs[N_RESERVED_PAIRS:]
    if 2 * n_test + n_pref_train + n_pref_test > len(reserved):
        raise ValueError("not enough reserved operand pairs for the requested sizes")
    words: list[str] = []
    while len(words) < 3 * n_test:
        w = random_word(rng)
        if w not in words:
            words.append(w)
    reserved_words = set(words)

    def fresh_word() -> str:
        while (w := random_word(rng)) in reserved_words:
            pass
        return w

    def take(seq: list, k: int) -> list:
        out, seq[:] = seq[:k], seq[k:]
        return out

    test = [make_example("add", p) for p in take(reserved, n_test)]
    test += [make_example("add_json", p) for p in take(reserved, n_test)]
    test += [make_example(task, w) for task in ("reverse", "upper", "reverse_upper") for w in take(words, n_test)]
    test += [make_example("fact", f) for f in FACTS]
    pref_test = [_preference(rng, p) for p in take(reserved, n_pref_test)]
    pref_train = [_preference(rng, p) for p in take(reserved, n_pref_train)]

    n_replay = n_train // 4
    train = [make_example("add_json", p) for p in rng.sample(open_pairs, n_train)]
    train += [make_example("add", p) for p in rng.sample(open_pairs, n_replay)]
    train += [make_example("reverse_upper", fresh_word()) for _ in range(n_train)]
    train += [make_example(task, fresh_word()) for task in ("reverse", "upper") for _ in range(n_replay)]

    pretrain = []
    tasks, weights = zip(*PRETRAIN_MIX.items(), strict=True)
    for task in rng.choices(tasks, weights, k=n_pretrain):
        item = {"add": lambda: rng.choice(open_pairs), "fact": lambda: rng.choice(FACTS)}.get(task, fresh_word)()
        pretrain.append(make_example(task, item))
    rng.shuffle(train)
    return {
        "pretrain": pretrain,
        "train": train,
        "test": test,
        "preferences_train": pref_train,
        "preferences_test": pref_test,
    }


def _preference(rng: random.Random, pair: tuple[int, int]) -> dict[str, str]:
    """A preference row for ``a + b``: the correct sum is chosen, a plausible wrong one rejected."""
    a, b = pair
    return {"task": "add", "prompt": f"What is {a} + {b}?", "chosen": str(a + b), "rejected": str(wrong_sum(rng, a, b))}


def write_jsonl(rows: Iterable[dict], path: Path) -> None:
    """Write rows as JSON Lines (one row a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------- tokenizer and model


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (digits split one by one) trained on ``texts``, wrapped for transformers with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=256,
    )


def build_model(tokenizer, hidden: int, layers: int, intermediate: int):
    """A tiny ``LlamaForCausalLM``: 4 query heads sharing 2 key/value heads (GQA), tied embeddings."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    return model


def encode(tokenizer, row: dict[str, str]) -> tuple[list[int], list[int]]:
    """Token ids of a chat-formatted row and labels that score only the assistant's answer and its end token."""
    from sparkcourse.models import chat_prompt

    prompt = chat_prompt(tokenizer, row["prompt"])
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}],
        tokenize=False,
    )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    end = ids.index(tokenizer.eos_token_id, len(p_ids)) + 1
    if ids[: len(p_ids)] != p_ids:
        raise ValueError(f"the prompt does not tokenize as a prefix of the full chat: {row}")
    return ids[:end], [-100] * len(p_ids) + ids[len(p_ids) : end]


def pretrain(model, tokenizer, rows: list[dict[str, str]], steps: int, batch_size: int, lr: float, seed: int) -> None:
    """AdamW with linear warm-up and cosine decay on right-padded batches, loss on the answers only."""
    import torch

    encoded = [encode(tokenizer, r) for r in rows]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    )
    model.train()
    order = torch.randperm(len(encoded), generator=gen).tolist()
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(encoded), generator=gen).tolist()
        batch, order = [encoded[i] for i in order[:batch_size]], order[batch_size:]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}", flush=True)
    model.eval()


# ---------------------------------------------------------------- main


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    """Generate the data, then (unless ``--data-only``) train and save the tokenizer and model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-only", action="store_true", help="only (re)write the JSONL datasets")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=768)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for reproducible bits)")
    parser.add_argument("--out", type=Path, default=ROOT / "sparkcourse" / "data")
    args = parser.parse_args(argv)

    splits = make_splits(SEED)
    for name in ("train", "test", "preferences_train", "preferences_test"):
        write_jsonl(splits[name], args.out / "instruct" / f"{name}.jsonl")
    print({k: len(v) for k, v in splits.items()})
    if args.data_only:
        return

    import torch

    from sparkcourse.datasets_course import exact_match, load_instruct

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    texts = [f"{r['prompt']}\n{r['response']}" for r in splits["pretrain"] + splits["train"]]
    tokenizer = train_tokenizer(texts, args.vocab_size)
    model = build_model(tokenizer, args.hidden, args.layers, args.intermediate)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}, parameters {n_params:,}")
    pretrain(model, tokenizer, splits["pretrain"], args.steps, args.batch_size, args.lr, SEED)
    train_s = time.perf_counter() - t0

    out = args.out / "tiny_lm"
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    test = load_instruct("test")
    scores = {t: exact_match(model, tokenizer, test.filter(lambda r, t=t: r["task"] == t)) for t in PRETRAIN_TASKS + HELD_OUT_TASKS}
    print(scores)
    files = sorted(p for p in out.iterdir() if p.name != "README.md")
    sizes = {p.name: p.stat().st_size for p in files}
    write_readme(out / "README.md", args, model, tokenizer, n_params, train_s, scores, sizes)
    print(f"trained in {train_s:.0f} s; files {sizes}; model.safetensors sha256 {sha256(out / 'model.safetensors')}")


def write_readme(path: Path, args, model, tokenizer, n_params: int, train_s: float, scores, sizes) -> None:
    """The model card next to the weights: what it is, how it was made, what it scores."""
    c = model.config
    rows = "\n".join(f"| `{t}` | {'pre-training' if t in PRETRAIN_TASKS else 'held out'} | {s:.2f} |" for t, s in scores.items())
    files = "\n".join(f"| `{n}` | {s:,} |" for n, s in sizes.items())
    path.write_text(f"""# sparkcourse tiny chat LM

A tiny `LlamaForCausalLM` and byte-level BPE tokenizer, built and trained from scratch by
`tools/make_tiny_lm.py` so that every course notebook has a chat model offline. Load it with
`sparkcourse.models.load_tiny_lm()` or `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`
on this folder.

## Architecture
- {c.num_hidden_layers} layers, hidden {c.hidden_size}, MLP {c.intermediate_size} (SwiGLU), {c.num_attention_heads} query heads
  sharing {c.num_key_value_heads} key/value heads (GQA, head dim {c.hidden_size // c.num_attention_heads}), RoPE, RMSNorm,
  tied input/output embeddings, context {c.max_position_embeddings} tokens; {n_params:,} parameters, stored in float32.
- Tokenizer: byte-level BPE, {len(tokenizer)} tokens, digits split one by one, trained on the course text below.
  Special tokens `<|bos|>`, `<|end|>` (end of turn = EOS), `<|pad|>`, `<|system|>`, `<|user|>`, `<|assistant|>`.
  Chat template: `<|bos|><|user|>\\n...<|end|>\\n<|assistant|>\\n...<|end|>\\n`.

## Training
- Data: {len(make_splits.__defaults__) and args.steps * args.batch_size:,} examples drawn from a 60,000-row synthetic chat corpus
  (seed {SEED}) of the pre-training tasks: 2-digit addition (`What is 23 + 45?`), reversing and uppercasing a
  word spelled with spaces (`Reverse: c u d a`), and facts about number formats and the DGX Spark.
- Loss on the assistant's answer and its `<|end|>` only; AdamW (lr {args.lr}, warm-up, cosine decay),
  {args.steps} steps of batch {args.batch_size}, CPU, {args.threads} threads: {train_s / 60:.1f} min including the tokenizer.
- Rebuild with `python tools/make_tiny_lm.py` from the repository root. Data, tokenizer and weights are
  deterministic for a given torch version, CPU and thread count (re-running on the machine that made them gave
  identical bytes); another CPU may change the last bits of the weights, not the scores below.

## Exact match on `sparkcourse/data/instruct/test.jsonl` (greedy decoding)
| task | family | exact match |
|---|---|---|
{rows}

Pre-training tasks use operand pairs and words never seen in pre-training (facts are recall). The held-out
tasks (`add_json`: answer as `{{"answer": 68}}`; `reverse_upper`: both operations at once) never appeared in
pre-training: they are what the fine-tuning week teaches, with `train.jsonl`.

## Files
| file | bytes |
|---|---|
{files}
""")


if __name__ == "__main__":
    main()
