"""Week 08 (08-moe) lab code: a tiny MoE language model against a dense one with the same active parameters, on
the course's instruction data. Shared by the notebook and ``benchmarks/moe_tiny.py``. It takes the student's
router and load-balancing loss as arguments and never carries an exercise's answer.

Both models are transformers ``MixtralForCausalLM`` with the course tiny LM's tokenizer: the MoE has ``experts``
SwiGLU experts of width ``expert_size`` and routes each token to ``top_k`` of them; the dense model is the same
architecture with one expert of width ``top_k * expert_size`` (its router, a single logit, always gives weight 1).
So the two have the same attention and the same FFN parameters per token; they differ by the routers,
``(experts - 1) * hidden`` parameters per layer.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from sparkcourse.models import TINY_LM_PATH


@functools.lru_cache(maxsize=4)
def token_blocks(split: str, block: int) -> torch.Tensor:
    """The instruction data of ``split`` ("prompt response" lines, EOS between them) tokenised with the tiny LM's
    tokenizer and cut into ``(n, block)`` rows."""
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TINY_LM_PATH), local_files_only=True)
    path = TINY_LM_PATH.parent / "instruct" / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ids: list[int] = []
    for row in tok([f"{r['prompt']} {r['response']}" for r in rows], add_special_tokens=False)["input_ids"]:
        ids += row + [tok.eos_token_id]
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).reshape(n, block)


def build(experts: int, top_k: int, expert_size: int, hidden: int, layers: int, seed: int, vocab: int = 525):
    """A float32 ``MixtralForCausalLM`` with random weights (seeded)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    cfg = MixtralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=expert_size,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        num_local_experts=experts, num_experts_per_tok=top_k, max_position_embeddings=256,
                        tie_word_embeddings=True, router_jitter_noise=0.0)
    return MixtralForCausalLM(cfg)


def active_params(model) -> int:
    """Parameters one token uses: all, less the experts it is not routed to."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    per_expert = 3 * cfg.hidden_size * cfg.intermediate_size
    return total - cfg.num_hidden_layers * (cfg.num_local_experts - cfg.num_experts_per_tok) * per_expert


def train(model, data: torch.Tensor, steps: int, batch: int, seed: int, aux_loss: Callable | None = None,
          aux_coef: float = 0.0, lr: float = 3e-3) -> float:
    """AdamW on next-token prediction, plus ``aux_coef`` times the mean over layers of ``aux_loss(logits, k)``;
    returns the seconds it took."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    k = model.config.num_experts_per_tok
    t0 = time.perf_counter()
    for _ in range(steps):
        ids = data[torch.randint(0, len(data), (batch,), generator=gen)]
        out = model(input_ids=ids, output_router_logits=aux_coef > 0)
        loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        if aux_coef > 0:
            loss = loss + aux_coef * torch.stack([aux_loss(lg, k) for lg in out.router_logits]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def evaluate(model, data: torch.Tensor, route: Callable) -> tuple[float, torch.Tensor]:
    """(mean next-token loss on ``data``, expert load per layer): the load is the share of tokens that ``route``
    sends to each expert, shape ``(layers, experts)``, each row summing to top_k."""
    out = model(input_ids=data, output_router_logits=True)
    loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), data[:, 1:].flatten()).item()
    k, n = model.config.num_experts_per_tok, model.config.num_local_experts
    loads = []
    for lg in out.router_logits:
        _, idx = route(lg.double(), k)
        loads.append(torch.bincount(idx.reshape(-1), minlength=n).double() / lg.shape[0])
    return loss, torch.stack(loads)


def compare(route: Callable, aux_loss: Callable, seeds: Sequence[int] = (0, 1, 2), steps: int = 200,
            aux_coefs: Sequence[float] = (0.0, 0.01), hidden: int = 64, layers: int = 2, experts: int = 8,
            top_k: int = 2, expert_size: int = 64, batch: int = 16, block: int = 64, eval_blocks: int = 64,
            log: Callable[[str], None] | None = None) -> list[dict]:
    """Train the dense model and the MoE (once per ``aux_coefs`` value) for every seed; one dict per run with
    model, seed, eval_loss, load (MoE only), active_params, total_params, seconds."""
    train_data, eval_data = token_blocks("train", block), token_blocks("test", block)[:eval_blocks]
    rows = []
    for seed in seeds:
        runs = [("dense", 1, 1, top_k * expert_size, 0.0)]
        runs += [(f"moe, aux {c:g}", experts, top_k, expert_size, c) for c in aux_coefs]
        for name, n, k, width, coef in runs:
            model = build(n, k, width, hidden, layers, seed)
            seconds = train(model, train_data, steps, batch, seed, aux_loss, coef)
            loss, load = evaluate(model, eval_data, route)
            rows.append(dict(model=name, seed=seed, eval_loss=loss, load=None if n == 1 else load,
                             active_params=active_params(model),
                             total_params=sum(p.numel() for p in model.parameters()), seconds=seconds))
            if log is not None:
                log(f"{name:14s} seed {seed}: eval loss {loss:.3f}  ({seconds:.0f} s)")
    return rows


# --- the bandwidth arithmetic and the spark measurement ---------------------------------------------------------


def param_split(model) -> dict[str, int]:
    """Parameters of a transformers MoE model by role: ``experts`` (the routed experts' tensors, ``.experts.`` in
    the name), ``embed`` (the input embedding table), ``other`` (attention, routers, shared experts, norms, head),
    and ``active``: what one token multiplies with (other + the top-k share of the experts; the embedding is a
    lookup of one row, not counted)."""
    cfg = model.config
    n_exp = getattr(cfg, "num_local_experts", None) or getattr(cfg, "n_routed_experts", None)
    share = cfg.num_experts_per_tok / n_exp
    split = {"experts": 0, "embed": 0, "other": 0}
    emb = model.get_input_embeddings().weight
    for name, p in model.named_parameters():
        key = "embed" if p is emb else "experts" if ".experts." in name else "other"
        split[key] += p.numel()
    if getattr(cfg, "tie_word_embeddings", False):  # the head multiplies with the whole table
        split["other"], split["embed"] = split["other"] + split["embed"], 0
    split["total"] = split["experts"] + split["embed"] + split["other"]
    split["active"] = round(split["other"] + share * split["experts"])
    return split


def meta_model(values: dict, **overrides):
    """The model a shipped config describes, built on the meta device (no memory, no time)."""
    from transformers import AutoModelForCausalLM

    from sparkcourse import hub

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hub.make_config(values, **overrides))


@torch.no_grad()
def decode_rate(model, prompt_len: int = 32, new_tokens: int = 32, seed: int = 0) -> dict:
    """Greedy decoding of ``new_tokens`` after a random prompt, one token per forward with the KV cache, batch 1.

    On CUDA each step is timed with CUDA events (synchronised) and the peak is ``torch.cuda.max_memory_allocated``
    since the start; on a CPU with perf_counter and no peak. Returns tokens_per_s (median step), step_s (list),
    peak_bytes (or None)."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=gen).to(device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    steps, tokens = [], [int(nxt)]
    for _ in range(new_tokens):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        tokens.append(int(nxt))  # int() waits for the GPU: inside the timed step, as a real decoder must
        if cuda:
            end.record()
            end.synchronize()
            steps.append(start.elapsed_time(end) / 1e3)
        else:
            steps.append(time.perf_counter() - t0)
    median = sorted(steps)[len(steps) // 2]
    return dict(tokens_per_s=1.0 / median, step_s=steps, tokens=tokens, prompt=ids.cpu(),
                peak_bytes=torch.cuda.max_memory_allocated() if cuda else None)


def against_bound(model, bandwidth: float, prompt_len: int = 128, new_tokens: int = 64) -> dict:
    """Decode speed of ``model`` (:func:`decode_rate`) against ``bandwidth`` / bytes of the active parameters in
    the model's own dtype: split, read_bytes, bound (tokens/s), spark_bound (at 273 GB/s), and the measurement."""
    from sparkcourse.capacity import SPARK_BANDWIDTH

    split = param_split(model)
    read = split["active"] * next(model.parameters()).element_size()
    res = decode_rate(model, prompt_len, new_tokens)
    return dict(split=split, read_bytes=read, bound=bandwidth / read, spark_bound=SPARK_BANDWIDTH / read,
                share_of_bound=res["tokens_per_s"] * read / bandwidth, **res)
