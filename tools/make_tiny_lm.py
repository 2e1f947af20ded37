"""Build, pre-train and save the course's tiny offline chat LM, with its instruction and preference datasets.

Run from the repository root (CPU, one torch thread, a few minutes; fixed seeds, so a re-run on the same
torch version and CPU type reproduces the data and the weights bit for bit):

    python tools/make_tiny_lm.py            # writes sparkcourse/data/instruct/ and sparkcourse/data/tiny_lm/
    python tools/make_tiny_lm.py --data-only

Steps: generate synthetic chat tasks (pre-training corpus, fine-tuning train/test splits, arithmetic
preferences) -> train a byte-level BPE tokenizer on that course text -> pre-train a tiny Llama on the
pre-training tasks, loss on the assistant's answer -> save with ``save_pretrained`` -> measure exact match,
before and after a short LoRA probe fine-tune of a copy -> write the README next to the weights.
"""

from __future__ import annotations

import argparse
import copy
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
    "{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# Facts a student meets in the course: (question, answer). Bits and bytes of number formats, the Spark.
BITS = {"FP64": 64, "FP32": 32, "FP16": 16, "BF16": 16, "FP8": 8, "FP4": 4, "INT8": 8, "INT4": 4, "NF4": 4}
BYTES = {"FP32": "4", "FP16": "2", "BF16": "2", "FP8": "1", "INT8": "1", "FP4": "0.5", "INT4": "0.5"}
EXPONENT_MANTISSA = {"FP32": (8, 23), "BF16": (8, 7), "FP16": (5, 10), "FP8 E4M3": (4, 3), "FP8 E5M2": (5, 2)}
FACTS = [
    *[(f"How many bits does {f} use?", str(b)) for f, b in BITS.items()],
    *[(f"How many bytes does one {f} parameter take?", b) for f, b in BYTES.items()],
    *[(f"How many exponent bits does {f} have?", str(e)) for f, (e, _) in EXPONENT_MANTISSA.items()],
    *[(f"How many mantissa bits does {f} have?", str(m)) for f, (_, m) in EXPONENT_MANTISSA.items()],
    ("How much memory does the DGX Spark have?", "128 GB"),
    ("What is the memory bandwidth of the DGX Spark?", "273 GB/s"),
    ("Which chip is in the DGX Spark?", "GB10"),
    ("Which GPU architecture does the DGX Spark use?", "Blackwell"),
    ("Which CPU does the DGX Spark use?", "Grace"),
]
# Course prose added to the tokenizer's training text, so that course words get their own merges.
COURSE_TEXT = (
    "The DGX Spark pairs a Grace CPU with a Blackwell GPU on one GB10 chip. CPU and GPU share 128 GB of\n"
    "unified memory with a bandwidth of about 273 GB/s, so "
    "a model that fits in memory is limited by how fast its\n"
    "weights stream. Number formats trade precision for "
    "memory: FP32, TF32, BF16, FP16, FP8 and FP4, with integer\n"
    "formats INT8 and INT4 and the NormalFloat format NF4 "
    "for quantized weights. A transformer turns tokens into\n"
    "embeddings, mixes them with attention and a feed-forward "
    "network, and predicts the next token. The key and value\n"
    "cache grows with every token of the context. Fine-tuning "
    "adapts a pretrained model to a task: LoRA trains small\n"
    "low-rank adapters, quantization shrinks the weights, and "
    "preference optimization with DPO, ORPO or SimPO teaches\n"
    "a model which of two answers people prefer. Kernels "
    "written with CUDA and Numba run on the GPU in threads,\n"
    "blocks and grids; coalesced loads, shared memory tiles "
    "and atomics decide their speed. Retrieval finds documents\n"
    "with embeddings and an index, and evaluation measures exact match, accuracy and latency."
)
# Facts with a numeric answer are also asked for as JSON, so that the JSON answer format is known.
NUMERIC_FACTS = [(q, a) for q, a in FACTS if a.replace(".", "", 1).isdigit()]
# Mixture of the pre-training corpus (held-out tasks never appear in it).
PRETRAIN_MIX = {"add": 0.4, "reverse": 0.2, "upper": 0.2, "fact": 0.1, "fact_json": 0.1}
N_PRETRAIN = 60_000  # rows of the pre-training corpus
N_RESERVED_PAIRS = 2000  # 2-digit operand pairs kept out of pre-training for evaluation and preferences


# ---------------------------------------------------------------- data


def spaced(word: str) -> str:
    """Letters separated by spaces, so the tokenizer gives one token per letter: ``cuda`` -> ``c u d a``."""
    return " ".join(word)


def make_example(task: str, item) -> dict[str, str]:
    """One instruction row ``{task, prompt, response}``; ``item`` is ``(a, b)``, a word or a fact."""
    if task == "add":
        a, b = item
        return {"task": task, "prompt": f"What is {a} + {b}?", "response": str(a + b)}
    if task == "add_words":
        a, b = item
        return {"task": task, "prompt": f"Add {a} and {b}.", "response": str(a + b)}
    if task == "reverse":
        return {"task": task, "prompt": f"Reverse: {spaced(item)}", "response": spaced(item[::-1])}
    if task == "spell_backwards":
        return {"task": task, "prompt": f"Spell backwards: {spaced(item)}", "response": spaced(item[::-1])}
    if task == "upper":
        return {"task": task, "prompt": f"Uppercase: {spaced(item)}", "response": spaced(item.upper())}
    if task == "shout":
        return {"task": task, "prompt": f"Shout: {spaced(item)}", "response": spaced(item.upper())}
    if task == "fact":
        question, answer = item
        return {"task": task, "prompt": question, "response": answer}
    if task == "fact_json":
        question, answer = item
        value = float(answer) if "." in answer else int(answer)
        return {
            "task": task,
            "prompt": f"{question} Answer in JSON.",
            "response": json.dumps({"answer": value}),
        }
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
    n_pretrain: int = N_PRETRAIN,
    n_train: int = 400,
    n_test: int = 100,
    n_pref_train: int = 400,
    n_pref_test: int = 100,
) -> dict[str, list[dict[str, str]]]:
    """All course data: ``pretrain`` corpus, instruction ``train``/``test``, ``preferences_train``/``_test``.

    Operand pairs and words of every evaluation row are kept out of pre-training and of ``train``; no
    prompt is in two splits. ``train`` holds ``n_train`` rows per held-out task plus a quarter as many
    replay rows per pre-training task except facts; ``test`` holds ``n_test`` rows per task and every fact.
    """
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(100) for b in range(100)]
    rng.shuffle(pairs)
    reserved, open_pairs = pairs[:N_RESERVED_PAIRS], pairs[N_RESERVED_PAIRS:]
    eval_tasks = ("add", "reverse", "upper", *HELD_OUT_TASKS)
    pair_tasks = [t for t in eval_tasks if t.startswith("add")]
    word_tasks = [t for t in eval_tasks if not t.startswith("add")]
    if len(pair_tasks) * n_test + n_pref_train + n_pref_test > len(reserved):
        raise ValueError("not enough reserved operand pairs for the requested sizes")
    words: list[str] = []
    while len(words) < len(word_tasks) * n_test:
        if (w := random_word(rng)) not in words:
            words.append(w)
    reserved_words = set(words)

    def fresh_word() -> str:
        while (w := random_word(rng)) in reserved_words:
            pass
        return w

    def take(seq: list, k: int) -> list:
        out, seq[:] = seq[:k], seq[k:]
        return out

    test = [make_example(task, p) for task in pair_tasks for p in take(reserved, n_test)]
    test += [make_example(task, w) for task in word_tasks for w in take(words, n_test)]
    test += [make_example("fact", f) for f in FACTS] + [make_example("fact_json", f) for f in NUMERIC_FACTS]
    pref_test = [_preference(rng, p) for p in take(reserved, n_pref_test)]
    pref_train = [_preference(rng, p) for p in take(reserved, n_pref_train)]

    train = []
    for task in eval_tasks:
        n = n_train if task in HELD_OUT_TASKS else n_train // 4
        items = rng.sample(open_pairs, n) if task in pair_tasks else [fresh_word() for _ in range(n)]
        train += [make_example(task, item) for item in items]
    rng.shuffle(train)

    items = {
        "add": lambda: rng.choice(open_pairs),
        "fact": lambda: rng.choice(FACTS),
        "fact_json": lambda: rng.choice(NUMERIC_FACTS),
    }
    tasks, weights = zip(*PRETRAIN_MIX.items(), strict=True)
    pretrain = [
        make_example(t, items.get(t, fresh_word)()) for t in rng.choices(tasks, weights, k=n_pretrain)
    ]
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
    prompt, rejected = f"What is {a} + {b}?", str(wrong_sum(rng, a, b))
    return {"task": "add", "prompt": prompt, "chosen": str(a + b), "rejected": rejected}


def write_jsonl(rows: Iterable[dict], path: Path) -> None:
    """Write rows as JSON Lines (one row a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------- tokenizer and model


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (digits split one by one) trained on ``texts``, wrapped with a chat template."""
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
    from transformers import GenerationConfig

    from sparkcourse.models import random_llama

    model = random_llama(
        None,  # the caller seeded torch
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    return model


def encode(tokenizer, row: dict[str, str]) -> tuple[list[int], list[int]]:
    """Token ids of a chat-formatted row, and labels that score only the answer and its end token."""
    from sparkcourse.models import chat_prompt

    prompt = chat_prompt(tokenizer, row["prompt"])
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}],
        tokenize=False,
    )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[: len(p_ids)] != p_ids or ids[-1] != tokenizer.eos_token_id:
        raise ValueError(f"the chat does not tokenize as prompt + answer + end of turn: {row}")
    return ids, [-100] * len(p_ids) + ids[len(p_ids) :]


def train(
    model,
    tokenizer,
    rows: list[dict[str, str]],
    steps: int,
    batch_size: int,
    lr: float,
    label_smoothing: float = 0.0,
    seed: int = SEED,
    log_every: int = 200,
) -> None:
    """AdamW, warm-up and cosine decay on right-padded chat rows; (label-smoothed) loss on answers only."""
    import torch
    import torch.nn.functional as F

    encoded = [encode(tokenizer, r) for r in rows]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.98), weight_decay=0.01
    )
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / steps)))),
    )
    model.train()
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(encoded), generator=gen).tolist()
        batch, order = [encoded[i] for i in order[:batch_size]], order[batch_size:]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), label_smoothing=label_smoothing
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}", flush=True)
    model.eval()


def lora_probe(model, tokenizer, rows: list[dict[str, str]], steps: int, batch_size: int, lr: float):
    """A LoRA fine-tune (r=8 on q_proj, v_proj) of a copy of ``model``: shows that held-out tasks move."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    train(peft_model, tokenizer, rows, steps, batch_size, lr, log_every=50)
    return peft_model


def scores_by_task(model, tokenizer, rows: list[dict[str, str]]) -> dict[str, float]:
    """Greedy exact match of ``model`` on ``rows`` per task, pre-training tasks first."""
    from datasets import Dataset

    from sparkcourse.datasets_course import exact_match

    return {
        task: exact_match(model, tokenizer, Dataset.from_list([r for r in rows if r["task"] == task]))
        for task in PRETRAIN_TASKS + HELD_OUT_TASKS
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    """Generate the data, then (unless ``--data-only``) train, probe and save the tokenizer and model."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-only", action="store_true", help="only (re)write the JSONL datasets")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--label-smoothing", type=float, default=0.2, help="keeps logits moderate for fine-tuning"
    )
    parser.add_argument("--hidden", type=int, default=80)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=256)
    parser.add_argument(
        "--vocab-size", type=int, default=768, help="upper bound; BPE stops when no pair repeats"
    )
    parser.add_argument("--probe-steps", type=int, default=150, help="LoRA fine-tuning steps of the probe")
    parser.add_argument("--probe-lr", type=float, default=3e-3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (fixed for reproducible bits)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "sparkcourse" / "data")
    args = parser.parse_args(argv)

    splits = make_splits(SEED)
    for name in ("train", "test", "preferences_train", "preferences_test"):
        write_jsonl(splits[name], args.out / "instruct" / f"{name}.jsonl")
    print({k: len(v) for k, v in splits.items()})
    if args.data_only:
        return

    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    texts = [f"{r['prompt']}\n{r['response']}" for r in splits["pretrain"] + splits["train"]] + [COURSE_TEXT]
    tokenizer = train_tokenizer(texts, args.vocab_size)
    model = build_model(tokenizer, args.hidden, args.layers, args.intermediate)
    print(f"vocab {len(tokenizer)}, parameters {model.num_parameters():,}")
    train(model, tokenizer, splits["pretrain"], args.steps, args.batch_size, args.lr, args.label_smoothing)
    times = (time.perf_counter() - t0, time.process_time() - cpu0)

    out = args.out / "tiny_lm"
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    scores = scores_by_task(model, tokenizer, splits["test"])
    print("pre-trained", scores)
    probe = lora_probe(model, tokenizer, splits["train"], args.probe_steps, 16, args.probe_lr)
    probe_scores = scores_by_task(probe, tokenizer, splits["test"])
    print("after LoRA probe", probe_scores)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.name != "README.md"}
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    write_readme(out / "README.md", args, model, tokenizer, times, scores, probe_scores, sizes, digest)
    print(f"trained in {times[0]:.0f} s ({times[1]:.0f} s CPU); files {sizes}; weights sha256 {digest}")


def write_readme(path: Path, args, model, tokenizer, times, scores, probe_scores, sizes, digest: str) -> None:
    """The model card next to the weights: what it is, how it was made, what it scores."""
    c = model.config
    family = {t: "pre-training" if t in PRETRAIN_TASKS else "held out" for t in scores}
    rows = "\n".join(f"| `{t}` | {family[t]} | {scores[t]:.2f} | {probe_scores[t]:.2f} |" for t in scores)
    files = "\n".join(f"| `{n}` | {s:,} |" for n, s in sizes.items())
    path.write_text(f"""# sparkcourse tiny chat LM

A tiny `LlamaForCausalLM` and byte-level BPE tokenizer, built and trained from scratch on CPU by
`tools/make_tiny_lm.py`, so that every course notebook has a chat model offline. Load it with
`sparkcourse.models.load_tiny_lm()`, or with `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`
on this folder.

## Architecture
- {c.num_hidden_layers} layers, hidden size {c.hidden_size}, SwiGLU MLP {c.intermediate_size},
  {c.num_attention_heads} query heads sharing {c.num_key_value_heads} key/value heads
  (GQA, head dim {c.hidden_size // c.num_attention_heads}), RoPE, RMSNorm, tied input/output embeddings,
  context {c.max_position_embeddings} tokens: {model.num_parameters():,} parameters, stored in float32.
- Tokenizer: byte-level BPE with digits split one by one, {len(tokenizer)} tokens, trained on the course
  text (the chat data below and a paragraph of course prose). Special tokens `<|bos|>`, `<|end|>` (end of
  turn, the EOS), `<|pad|>`, `<|system|>`, `<|user|>`, `<|assistant|>`. Chat template:
  `<|bos|><|user|>\\n…<|end|><|assistant|>\\n…<|end|>`; a turn ends with `<|end|>`, no newline.

## Training
- Data: a {N_PRETRAIN:,}-row synthetic chat corpus (seed {SEED}) of the pre-training tasks: 2-digit addition
  (`What is 23 + 45?`), reversing and uppercasing a word spelled with spaces (`Reverse: c u d a`,
  `Uppercase: c u d a`), and facts about number formats and the DGX Spark, asked plainly or with
  `Answer in JSON.` (`{{"answer": 8}}`).
- Loss on the assistant's answer and its `<|end|>` only, label smoothing {args.label_smoothing} (keeps the
  logits moderate, so that fine-tuning moves the model quickly); AdamW, lr {args.lr}, warm-up and cosine
  decay, {args.steps} steps of {args.batch_size} rows, {args.threads} torch thread(s), fixed seeds:
  {times[0]:.0f} s wall-clock, {times[1]:.0f} s CPU on the machine that made it, tokenizer included.
- Rebuild with `python tools/make_tiny_lm.py` from the repository root (`--data-only`: only the JSONL).
  The JSONL files are byte-for-byte reproducible. The weights are reproducible for one torch version, CPU
  type and thread count (`model.safetensors` SHA-256 `{digest}`); another torch version or thread
  count trains a different model, with scores near but not equal to those below.

## Exact match on `sparkcourse/data/instruct/test.jsonl` (greedy decoding)
| task | family | pre-trained | after LoRA probe |
|---|---|---|---|
{rows}

Pre-training tasks are measured on operand pairs and words that pre-training never saw (facts are recall).
The held-out tasks never appear in pre-training: they ask for known skills in new words (`Spell backwards:`
for `Reverse:`, `Add 23 and 45.` for `What is 23 + 45?`, `Shout:` for `Uppercase:`). They are what the
fine-tuning week teaches with `train.jsonl`, which also replays a quarter as many rows of each pre-training
task except facts (so forgetting shows on `fact` and `fact_json`). The last column is the probe the script
runs: LoRA r=8 on `q_proj` and `v_proj` of a copy of the model, {args.probe_steps} steps of 16 rows of
`train.jsonl`, lr {args.probe_lr}.

## Files
| file | bytes |
|---|---|
{files}
""")


if __name__ == "__main__":
    main()
