"""Week 09 (09-inference) lab code: the pieces of a Llama layer the exercises assemble, the cost model and the
arrival traces of the batching simulation, and a radix-tree prefix cache for the explore cells. Takes the
student's functions as arguments; never carries an exercise's answer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

# ---------------------------------------------------------------------------------------------------------------
# The pieces of a transformers Llama (LlamaForCausalLM) that a KV-cache decoder needs, layer by layer.


def embed(model, ids: torch.Tensor) -> torch.Tensor:
    """Token embeddings, ``(batch, T, hidden)``."""
    return model.model.embed_tokens(ids)


def layer_qkv(model, i: int, hidden: torch.Tensor, positions: torch.Tensor):
    """Layer ``i``'s queries, keys and values for ``hidden`` (``(batch, T, hidden)``) whose tokens sit at
    ``positions`` (``(T,)`` long): RMSNorm, the three projections and RoPE at those positions.

    Returns ``q`` of shape ``(batch, heads, T, head_dim)`` and ``k, v`` of shape ``(batch, kv_heads, T, head_dim)``.
    """
    layer = model.model.layers[i]
    attn = layer.self_attn
    b, t, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    d = attn.head_dim
    q = attn.q_proj(x).view(b, t, -1, d).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, -1, d).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, -1, d).transpose(1, 2)
    pos = positions.reshape(1, -1).expand(b, -1).to(hidden.device)
    cos, sin = model.model.rotary_emb(x, pos)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of ``T`` queries that are the LAST ``T`` positions of the ``S`` keys and values.

    ``q``: ``(batch, heads, T, d)``, ``k, v``: ``(batch, kv_heads, S, d)`` with ``S >= T`` (grouped-query heads are
    repeated); query ``j`` sees keys ``0 .. S - T + j``. Returns ``(batch, heads, T, d)``.
    """
    t, s = q.shape[2], k.shape[2]
    if s < t:
        raise ValueError(f"{t} queries but only {s} keys: append the new keys to the cache before attending")
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def layer_out(model, i: int, hidden: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """The rest of layer ``i``: output projection of ``attn_out`` (``(batch, heads, T, d)``), residual, RMSNorm, MLP,
    residual. Returns the layer's output hidden states ``(batch, T, hidden)``."""
    layer = model.model.layers[i]
    b, _, t, _ = attn_out.shape
    h = hidden + layer.self_attn.o_proj(attn_out.transpose(1, 2).reshape(b, t, -1))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Final RMSNorm and LM head: ``(batch, T, vocab)``."""
    return model.lm_head(model.model.norm(hidden))


def num_layers(model) -> int:
    """The number of decoder layers."""
    return len(model.model.layers)


@torch.no_grad()
def greedy_without_cache(model, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding that recomputes the whole sequence at every step (no cache): ``(batch, max_new_tokens)``."""
    ids = prompt_ids
    for _ in range(max_new_tokens):
        h = embed(model, ids)
        pos = torch.arange(ids.shape[1], device=ids.device)
        for i in range(num_layers(model)):
            q, k, v = layer_qkv(model, i, h, pos)
            h = layer_out(model, i, h, attend(q, k, v))
        ids = torch.cat([ids, logits(model, h[:, -1:]).argmax(-1)], 1)
    return ids[:, prompt_ids.shape[1]:]


def time_per_token(generate: Callable, model, prompt_ids: torch.Tensor, counts: Sequence[int]) -> list[float]:
    """Seconds per generated token of ``generate(model, prompt_ids, n)`` for each ``n`` in ``counts`` (the time of
    the whole call divided by ``n``; CUDA synchronised)."""
    out = []
    for n in counts:
        if prompt_ids.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(model, prompt_ids, n)
        if prompt_ids.is_cuda:
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) / n)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Serving simulation: request traces and a cost model for one engine iteration.


def length_trace(n: int, seed: int, *, prompt_mean: float = 161.0, output_mean: float = 338.0, sigma: float = 1.0,
                 max_len: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt, output) lengths from log-normal distributions with the given means and log-space spread
    ``sigma``, clipped to ``[1, max_len]`` in total. The default means are the ShareGPT averages the vLLM paper
    reports (Kwon et al. 2023, §6.1: 161 input and 338 output tokens)."""
    rng = np.random.default_rng(seed)
    mu = lambda m: math.log(m) - sigma**2 / 2  # noqa: E731  (log-normal with mean m)
    prompt = np.clip(np.rint(rng.lognormal(mu(prompt_mean), sigma, n)), 1, max_len // 2).astype(int)
    output = np.clip(np.rint(rng.lognormal(mu(output_mean), sigma, n)), 1, max_len - prompt).astype(int)
    return prompt, output


def arrival_trace(n: int, rate: float, seed: int, **lengths) -> list[tuple[float, int, int]]:
    """``n`` requests ``(arrival seconds, prompt tokens, output tokens)`` sorted by arrival: Poisson arrivals at
    ``rate`` per second, lengths from :func:`length_trace` (keyword arguments pass on)."""
    rng = np.random.default_rng(seed + 1)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    prompt, output = length_trace(n, seed, **lengths)
    return [(float(a), int(p), int(o)) for a, p, o in zip(arrivals, prompt, output, strict=True)]


@dataclass
class StepCost:
    """One engine iteration's time: ``fixed + per_seq * decoding sequences + per_prefill_token * prompt tokens``."""

    fixed: float
    per_seq: float
    per_prefill_token: float
    samples: list = field(default_factory=list)

    def __call__(self, n_decode: int, n_prefill_tokens: int) -> float:
        return self.fixed + self.per_seq * n_decode + self.per_prefill_token * n_prefill_tokens


@torch.no_grad()
def calibrate_step_cost(model, *, batches: Sequence[int] = (1, 4, 16, 32), prompts: Sequence[int] = (16, 64, 128),
                        context: int = 32, repeat: int = 3) -> StepCost:
    """Fit :class:`StepCost` to measured forward passes of ``model`` (a transformers causal LM): decode steps of
    ``batches`` sequences with ``context`` tokens of cache, and prefills of ``prompts`` tokens (best of ``repeat``)."""
    dev = next(model.parameters()).device
    vocab = model.config.vocab_size
    rows, times = [], []

    def best(fn):
        t = float("inf")
        for _ in range(repeat):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = min(t, time.perf_counter() - t0)
        return t

    for b in batches:
        cache = model(torch.randint(3, vocab, (b, context), device=dev), use_cache=True).past_key_values
        nxt = torch.randint(3, vocab, (b, 1), device=dev)
        import copy

        def step(cache=cache, nxt=nxt):
            model(nxt, past_key_values=copy.deepcopy(cache), use_cache=True)

        copy_time = best(lambda cache=cache: copy.deepcopy(cache))
        rows.append((1.0, b, 0.0))
        times.append(max(best(step) - copy_time, 1e-6))
    for t in prompts:
        ids = torch.randint(3, vocab, (1, t), device=dev)
        rows.append((1.0, 0.0, t))
        times.append(best(lambda ids=ids: model(ids, use_cache=True)))
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(times), rcond=None)
    coef = np.maximum(coef, 1e-7)  # a noisy fit must not produce a negative cost
    return StepCost(float(coef[0]), float(coef[1]), float(coef[2]), list(zip(rows, times, strict=True)))


def serving_metrics(requests: Sequence[tuple[float, int, int]], finish: Sequence[float]) -> dict[str, float]:
    """Throughput (generated tokens per second over the makespan) and p50/p99 latency (finish - arrival)."""
    arrivals = np.array([r[0] for r in requests])
    tokens = sum(r[2] for r in requests)
    lat = np.asarray(finish, dtype=float) - arrivals
    span = float(np.max(finish) - arrivals.min())
    return {"throughput": tokens / span, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "makespan": span}


# ---------------------------------------------------------------------------------------------------------------
# A radix-tree prefix cache (SGLang's RadixAttention idea), for the explore cells.


class _Node:
    __slots__ = ("children", "key", "last_used", "parent")

    def __init__(self, key: tuple, parent: _Node | None):
        self.key, self.parent, self.children, self.last_used = key, parent, {}, 0


class RadixCache:
    """Token prefixes in a radix tree (each edge holds a run of tokens), at most ``capacity`` tokens, evicting the
    least recently used leaves first (Zheng et al. 2024, SGLang, §3). ``match(tokens)`` returns how many leading
    tokens are cached (and touches them); ``insert(tokens)`` caches a sequence."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.clock = capacity, 0, 0
        self.root = _Node((), None)

    def _walk(self, tokens: Sequence[int], touch: bool) -> tuple[_Node, int, int]:
        node, i = self.root, 0
        while i < len(tokens):
            child = node.children.get(tokens[i])
            if child is None:
                return node, i, 0
            k = 0
            while k < len(child.key) and i + k < len(tokens) and child.key[k] == tokens[i + k]:
                k += 1
            if touch:
                child.last_used = self.clock
            if k < len(child.key):
                return child, i + k, k
            node, i = child, i + k
        return node, i, 0

    def match(self, tokens: Sequence[int]) -> int:
        """The number of leading ``tokens`` in the cache; marks them used now."""
        self.clock += 1
        return self._walk(tokens, touch=True)[1]

    def insert(self, tokens: Sequence[int]) -> None:
        """Cache ``tokens`` (splitting an edge where they diverge), then evict to the capacity."""
        self.clock += 1
        tokens = tuple(tokens)
        node, i, k = self._walk(tokens, touch=True)
        if k:  # split node's edge after k tokens
            upper = _Node(node.key[:k], node.parent)
            upper.last_used = self.clock
            node.parent.children[upper.key[0]] = upper
            node.key, node.parent = node.key[k:], upper
            upper.children[node.key[0]] = node
            node = upper
        if i < len(tokens):
            leaf = _Node(tokens[i:], node)
            leaf.last_used = self.clock
            node.children[tokens[i]] = leaf
            self.size += len(leaf.key)
        self._evict(protect=tokens)

    def _leaves(self) -> list[_Node]:
        out, stack = [], [self.root]
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(n.children.values())
            elif n is not self.root:
                out.append(n)
        return out

    def _evict(self, protect: tuple) -> None:
        while self.size > self.capacity:
            leaf = min(self._leaves(), key=lambda n: n.last_used)
            del leaf.parent.children[leaf.key[0]]
            self.size -= len(leaf.key)


def multi_turn_workload(n_users: int, turns: int, seed: int, *, system: int = 64, turn: int = 40,
                        answer: int = 60, vocab: int = 500) -> list[list[int]]:
    """Prompts of ``n_users`` interleaved chats: each turn's prompt is the shared system prompt, the whole
    conversation so far and a new message (token ids; lengths fixed, contents random)."""
    rng = np.random.default_rng(seed)
    sys_prompt = list(rng.integers(3, vocab, system))
    history = [list(sys_prompt) for _ in range(n_users)]
    prompts = []
    for _ in range(turns):
        for u in rng.permutation(n_users):
            history[u] += list(rng.integers(3, vocab, turn))
            prompts.append([int(t) for t in history[u]])
            history[u] += list(rng.integers(3, vocab, answer))  # the model's answer joins the conversation
    return prompts


def few_shot_workload(n_questions: int, seed: int, *, shots: int = 5, shot: int = 80, question: int = 30,
                      tasks: int = 3, vocab: int = 500) -> list[list[int]]:
    """Prompts of ``n_questions`` questions over ``tasks`` tasks: each is its task's ``shots`` examples (a shared
    prefix) followed by a new question."""
    rng = np.random.default_rng(seed)
    prefixes = [list(rng.integers(3, vocab, shots * shot)) for _ in range(tasks)]
    return [[int(t) for t in prefixes[int(rng.integers(tasks))] + list(rng.integers(3, vocab, question))]
            for _ in range(n_questions)]


def prefix_hit_rate(prompts: Sequence[Sequence[int]], capacity: int) -> float:
    """The fraction of prompt tokens found in a :class:`RadixCache` of ``capacity`` tokens, serving ``prompts`` in
    order (each prompt is matched, then inserted)."""
    cache, hit, total = RadixCache(capacity), 0, 0
    for p in prompts:
        hit += cache.match(p)
        total += len(p)
        cache.insert(p)
    return hit / total
