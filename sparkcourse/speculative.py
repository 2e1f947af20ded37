"""Speculative decoding on the tiny LM: a cheap draft model, draft-then-verify generation with KV caches rolled back
on rejection, the expected-tokens formula, and Medusa heads with tree verification and typical acceptance.

Papers followed: Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding" (2023)
and Chen et al., "Accelerating LLM Decoding with Speculative Sampling" (2023) for the draft-then-verify loop and
(1 - a^(g+1)) / (1 - a); Cai et al., "Medusa" (2024) and its official code for the heads (a zero-initialised
residual SiLU block and a vocabulary projection per head, initialised from the model's LM head, loss weights 0.8^k
on the frozen model: Medusa-1), the static candidate tree, and typical acceptance
(p(x) > min(epsilon, delta * exp(-H(p))), first token greedy).

The sampled acceptance rule (accept with min(1, p/q), resample from the residual, bonus token) is NOT here:
:func:`draft_generate` takes it as its ``step`` argument (see :data:`StepFn` for the contract). Batch size 1
everywhere; every tensor is created on the model's device, so the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Generator | None"], "Sequence[int] | torch.Tensor"]
"""The sampled-decoding acceptance rule that :func:`draft_generate` calls once per target call::

    step(p, q, draft_tokens, generator) -> tokens

- ``p``: float32 ``[gamma + 1, V]``, the target's next-token probabilities (softmax of logits / temperature):
  row i is the distribution of the token after the prefix and ``draft_tokens[:i]``; row ``gamma`` is the one
  for the bonus token after all gamma draft tokens.
- ``q``: float32 ``[gamma, V]``, the draft's probabilities from which ``draft_tokens[i]`` was sampled (row i).
- ``draft_tokens``: int64 ``[gamma]``, the draft's proposal.
- ``generator``: the ``torch.Generator`` passed to :func:`draft_generate` (on the models' device) or None;
  draw every random number with it (``torch.rand(..., generator=generator, device=p.device)``,
  ``torch.multinomial(..., generator=generator)``) so a seed reproduces a run.
- returns the tokens to append, a 1-D int tensor or a list of ints of length n + 1 with 0 <= n <= gamma:
  the accepted ``draft_tokens[:n]`` followed by one more token (the one resampled at the first rejection, or the
  bonus token drawn from ``p[gamma]`` when all gamma were accepted). :func:`draft_generate` checks the length
  and that the first n tokens equal the draft's, and raises ValueError otherwise.
"""


# ----------------------------------------------------------------------------------------------------------------
# KV-cache helpers (transformers' DynamicCache, one DynamicLayer per decoder layer)


def cache_length(cache: DynamicCache) -> int:
    """Number of positions held in a KV cache."""
    return cache.get_seq_length()


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first ``length`` positions of every layer of a KV cache (roll back rejected tokens), in place."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False) and layer.keys is not None:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def select_cache(cache: DynamicCache, start: int, keep: torch.Tensor) -> None:
    """Keep positions ``[:start]`` then ``start + keep`` (tree nodes of the accepted path, in order), in place."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False) and layer.keys is not None:
            idx = start + keep.to(layer.keys.device)
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys.index_select(-2, idx)], dim=-2)
            layer.values = torch.cat([layer.values[..., :start, :], layer.values.index_select(-2, idx)], dim=-2)


def _device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device


def _as_ids(prompt_ids: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    """A prompt as int64 ``[1, T]`` on ``device`` (accepts ``[T]``, ``[1, T]`` or a list of ints)."""
    ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be one non-empty sequence ([T] or [1, T]), got shape {tuple(ids.shape)}")
    return ids


def _eos_ids(model: PreTrainedModel, stop_at_eos: bool) -> set[int]:
    """The end-of-sequence ids that stop generation (the model's generation_config), or none."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None) if stop_at_eos else None
    return set() if eos is None else set(eos if isinstance(eos, (list, tuple)) else [eos])


def _finish(new: list[int], max_new_tokens: int, eos: set[int]) -> tuple[list[int], bool]:
    """Cut new tokens at max_new_tokens and after the first EOS; True when generation is over."""
    for i, t in enumerate(new[:max_new_tokens]):
        if t in eos:
            return new[: i + 1], True
    return new[:max_new_tokens], len(new) >= max_new_tokens


# ----------------------------------------------------------------------------------------------------------------
# Draft model


def make_draft(target: PreTrainedModel, n_layers: int | Sequence[int]) -> PreTrainedModel:
    """A self-speculative draft sharing the target's weights: its embeddings, final norm and LM head with the first
    ``n_layers`` decoder layers, or with the layers listed (e.g. ``(0, 2, 3)``: skip layer 1, as in Zhang et al.
    2023, "Draft & Verify"); a model of the target's class that ``generate(assistant_model=...)`` accepts."""
    layers = target.model.layers
    picked = list(range(n_layers)) if isinstance(n_layers, int) else [int(i) for i in n_layers]
    if not picked or any(not 0 <= i < len(layers) for i in picked) or picked != sorted(set(picked)):
        raise ValueError(f"n_layers must be 1..{len(layers)} or increasing layer indices, got {n_layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = len(picked)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in picked]
    with torch.device("meta"):
        draft = type(target)(config)
    for name, child in target.model.named_children():  # embeddings, norm, rotary embedding: shared
        if name != "layers":
            setattr(draft.model, name, child)
    draft.model.layers = nn.ModuleList(_reindexed(layers[i], j) for j, i in enumerate(picked))
    draft.lm_head = target.lm_head
    draft.generation_config = copy.deepcopy(target.generation_config)
    left = [n for n, t in list(draft.named_parameters()) + list(draft.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"make_draft left tensors unset: {left[:5]}")
    return draft.eval()


def _reindexed(layer: nn.Module, idx: int) -> nn.Module:
    """The decoder layer itself when its cache index is already ``idx``, else a shallow copy (same parameters)
    whose attention writes to cache layer ``idx``."""
    attn = getattr(layer, "self_attn", None)
    if attn is None or getattr(attn, "layer_idx", idx) == idx:
        return layer
    new_attn = copy.copy(attn)
    new_attn._modules = dict(attn._modules)
    new_attn.layer_idx = idx
    new_layer = copy.copy(layer)
    new_layer._modules = dict(layer._modules)
    new_layer._modules["self_attn"] = new_attn
    return new_layer


# ----------------------------------------------------------------------------------------------------------------
# Draft-then-verify speculative decoding


@dataclass
class SpecStats:
    """Counts from one :func:`draft_generate` run (draft tokens proposed/accepted, model calls, tokens)."""

    gamma: int
    target_calls: int = 0
    draft_calls: int = 0
    proposed: int = 0  # draft tokens proposed (gamma per target call)
    accepted: int = 0  # draft tokens accepted
    rejections: int = 0  # target calls that rejected a draft token (the others accepted all gamma)
    new_tokens: int = 0  # tokens returned (after cutting at max_new_tokens / EOS)
    produced: int = 0  # tokens produced by the verification steps before that cut
    accepted_per_call: list[int] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        """Per-token acceptance probability estimate: accepted / draft tokens actually tested (the alpha of
        (1 - a^(g+1)) / (1 - a); tokens after a rejection are never tested)."""
        tested = self.accepted + self.rejections
        return self.accepted / tested if tested else float("nan")

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed draft tokens (what serving engines report as the draft acceptance rate)."""
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def tokens_per_target_call(self) -> float:
        """Tokens each verification step yields, before the cut at max_new_tokens / EOS (what
        (1 - a^(g+1)) / (1 - a) predicts), per target forward pass (the prefill is also the first verification)."""
        return self.produced / self.target_calls if self.target_calls else float("nan")

    @property
    def new_tokens_per_target_call(self) -> float:
        """Tokens returned per target forward pass (after the cut: what a user gets; lower on short answers)."""
        return self.new_tokens / self.target_calls if self.target_calls else float("nan")


@torch.no_grad()
def draft_generate(
    target: PreTrainedModel,
    draft: PreTrainedModel,
    prompt_ids: torch.Tensor | Sequence[int],
    gamma: int,
    max_new_tokens: int,
    *,
    step: StepFn | None = None,
    greedy: bool = True,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    stop_at_eos: bool = True,
) -> tuple[torch.Tensor, SpecStats]:
    """Speculative decoding: the draft proposes ``gamma`` tokens, the target scores them all in one forward pass.

    Returns ``(ids, stats)``: ``ids`` is ``[1, T + n]`` (prompt then at most ``max_new_tokens`` new tokens, cut
    after the first EOS of the target's ``generation_config`` unless ``stop_at_eos=False``), like ``generate``.
    ``greedy=True``: accept draft tokens while they equal the target's argmax, then append the target's own token
    (the greedy output equals ``target.generate(do_sample=False)``). ``greedy=False``: tokens are sampled at
    ``temperature`` and ``step(p, q, draft_tokens, generator)`` decides what to append (contract: :data:`StepFn`).
    Both models keep a KV cache; rejected positions are cropped from both caches after each verification.
    """
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if greedy and step is not None:
        raise ValueError("step is the sampled-decoding rule: pass greedy=False with it")
    if not greedy and step is None:
        raise ValueError("greedy=False needs step(p, q, draft_tokens, generator)")
    device = _device(target)
    ids = _as_ids(prompt_ids, device)
    eos = _eos_ids(target, stop_at_eos)
    stats = SpecStats(gamma=gamma)
    seq: list[int] = ids[0].tolist()
    n_prompt = len(seq)
    t_cache, d_cache = DynamicCache(), DynamicCache()
    done = max_new_tokens <= 0
    while not done:
        # 1. the draft proposes gamma tokens (its cache covers seq; first call feeds what it has not seen yet)
        drafted: list[int] = []
        q_rows = []
        feed = seq[cache_length(d_cache):]
        for _ in range(gamma):
            logits = draft(torch.tensor([feed], device=device), past_key_values=d_cache, use_cache=True).logits
            stats.draft_calls += 1
            last = logits[0, -1].float()
            if greedy:
                tok = int(last.argmax())
            else:
                q_i = torch.softmax(last / temperature, dim=-1)
                tok = int(torch.multinomial(q_i, 1, generator=generator))
                q_rows.append(q_i)
            drafted.append(tok)
            feed = [tok]
        # 2. the target scores seq's unseen tail + the gamma draft tokens in one pass: gamma + 1 distributions
        tail = seq[cache_length(t_cache):] + drafted
        logits = target(torch.tensor([tail], device=device), past_key_values=t_cache, use_cache=True).logits
        stats.target_calls += 1
        rows = logits[0, -(gamma + 1):].float()
        # 3. accept / correct
        if greedy:
            best = rows.argmax(dim=-1).tolist()
            n = 0
            while n < gamma and drafted[n] == best[n]:
                n += 1
            new = drafted[:n] + [best[n]]
        else:
            p = torch.softmax(rows / temperature, dim=-1)
            q = torch.stack(q_rows)
            out = step(p, q, torch.tensor(drafted, device=device), generator)
            new = [int(t) for t in (out.tolist() if isinstance(out, torch.Tensor) else out)]
            n = len(new) - 1
            if not 0 <= n <= gamma or new[:n] != drafted[:n]:
                raise ValueError(f"step must return the accepted draft tokens then one token (1..{gamma + 1} "
                                 f"tokens starting with the draft's); got {new} for draft {drafted}")
        stats.proposed += gamma
        stats.accepted += n
        stats.rejections += n < gamma
        stats.accepted_per_call.append(n)
        stats.produced += len(new)
        # 4. roll back: both caches keep only positions whose tokens are now in seq (the last token stays unseen
        #    by the target; the draft saw drafted[:gamma - 1])
        base = len(seq)
        crop_cache(t_cache, base + n)
        crop_cache(d_cache, base + min(n, gamma - 1))
        new, done = _finish(new, n_prompt + max_new_tokens - len(seq), eos)
        seq += new
        done = done or len(seq) - n_prompt >= max_new_tokens
    stats.new_tokens = len(seq) - n_prompt
    return torch.tensor([seq], device=device), stats


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """Expected tokens per target call, (1 - alpha^(gamma+1)) / (1 - alpha) (Leviathan et al. 2023); gamma + 1
    at alpha = 1."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Leviathan et al.'s walltime improvement, tokens per call / (gamma * c + 1), c = draft call cost / target
    call cost."""
    return expected_tokens_per_call(alpha, gamma) / (gamma * cost_ratio + 1.0)


def empirical_distribution(samples: torch.Tensor | Iterable[int], vocab_size: int) -> torch.Tensor:
    """Relative frequencies of token ids (float64 ``[vocab_size]``, sums to 1)."""
    s = torch.as_tensor(list(samples) if not isinstance(samples, torch.Tensor) else samples).reshape(-1).long()
    counts = torch.bincount(s.cpu(), minlength=vocab_size).double()
    return counts / counts.sum()


def chi_square(counts: torch.Tensor | Sequence[float], probs: torch.Tensor | Sequence[float]) -> tuple[float, int, float]:
    """Pearson's goodness-of-fit of observed counts to expected probabilities: (statistic, dof, p-value).

    Categories with expected probability 0 must have count 0 (else the statistic is infinite); they do not count
    towards the degrees of freedom.
    """
    from scipy.stats import chi2

    c = torch.as_tensor(counts, dtype=torch.float64).cpu().reshape(-1)
    p = torch.as_tensor(probs, dtype=torch.float64).cpu().reshape(-1)
    n = float(c.sum())
    if bool((c[p == 0] > 0).any()):
        return math.inf, int((p > 0).sum()) - 1, 0.0
    keep = p > 0
    expected = n * p[keep] / p[keep].sum()
    stat = float(((c[keep] - expected) ** 2 / expected).sum())
    dof = int(keep.sum()) - 1
    return stat, dof, float(chi2.sf(stat, dof))


# ----------------------------------------------------------------------------------------------------------------
# Medusa


class ResBlock(nn.Module):
    """x + SiLU(W x + b), W and b initialised to zero (the block starts as the identity), as in Medusa."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residual block."""
        return x + self.act(self.linear(x))


class MedusaHeads(nn.Module):
    """``n_heads`` Medusa heads on a model's last hidden state; head k predicts the token k + 2 positions ahead
    (the model's own LM head predicts the next one). Each head: a ResBlock and its own vocabulary projection."""

    def __init__(self, hidden_size: int, vocab_size: int, n_heads: int, lm_head_weight: torch.Tensor | None = None):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(ResBlock(hidden_size), nn.Linear(hidden_size, vocab_size, bias=False))
            for _ in range(n_heads)
        )
        if lm_head_weight is not None:
            for head in self.heads:
                head[-1].weight.data.copy_(lm_head_weight)

    @property
    def n_heads(self) -> int:
        """Number of heads."""
        return len(self.heads)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[n_heads, *hidden.shape[:-1], V]`` from hidden states ``[..., H]``."""
        return torch.stack([head(hidden) for head in self.heads])


def _decoder_states(model: PreTrainedModel, ids: torch.Tensor, **kw) -> torch.Tensor:
    """The last hidden state (after the final norm: what the LM head reads), ``[1, T, H]``."""
    return model.get_decoder()(input_ids=ids, **kw).last_hidden_state


def train_medusa_heads(
    model: PreTrainedModel,
    texts_or_ids: Sequence[str] | Sequence[torch.Tensor] | Sequence[Sequence[int]],
    n_heads: int = 3,
    steps: int = 100,
    *,
    seed: int = 0,
    tokenizer=None,
    lr: float = 3e-3,
    decay: float = 0.8,
    batch_size: int = 1024,
) -> MedusaHeads:
    """Medusa-1 heads trained on the FROZEN model's last hidden states: loss sum_k decay^k * CE(head_k(h_t),
    x_{t+k+2}), AdamW. Texts need ``tokenizer`` (tokenised without special tokens added); ids are used as they
    are. Best data: the model's own outputs (self-distillation), so the heads learn what the model will say."""
    device = _device(model)
    if texts_or_ids and isinstance(texts_or_ids[0], str):
        if tokenizer is None:
            raise ValueError("texts need a tokenizer")
        seqs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts_or_ids]
    else:
        seqs = [torch.as_tensor(s).reshape(-1).tolist() for s in texts_or_ids]
    hidden, labels = [], []
    with torch.no_grad():
        for s in seqs:
            if len(s) < 2:
                continue
            ids = torch.tensor([s], device=device)
            h = _decoder_states(model, ids)[0].float()
            lab = torch.full((len(s), n_heads), -100, dtype=torch.long, device=device)
            for k in range(n_heads):
                if len(s) > k + 2:
                    lab[: len(s) - k - 2, k] = ids[0, k + 2:]
            hidden.append(h)
            labels.append(lab)
    if not hidden:
        raise ValueError("no sequence of 2 tokens or more to train on")
    h_all, y_all = torch.cat(hidden), torch.cat(labels)
    keep = (y_all[:, 0] != -100)
    h_all, y_all = h_all[keep], y_all[keep]
    lm_w = model.get_output_embeddings().weight.detach().float()
    heads = MedusaHeads(h_all.shape[-1], lm_w.shape[0], n_heads, lm_w).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)  # minibatch order; the heads start deterministic
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.0)
    weights = torch.tensor([decay**k for k in range(n_heads)], device=device)
    heads.train()
    for _ in range(steps):
        if len(h_all) > batch_size:
            idx = torch.randint(len(h_all), (batch_size,), device=device, generator=gen)
            h, y = h_all[idx], y_all[idx]
        else:
            h, y = h_all, y_all
        logits = heads(h)  # [K, B, V]
        losses = torch.stack([nn.functional.cross_entropy(logits[k], y[:, k], ignore_index=-100)
                              for k in range(n_heads)])
        loss = (weights * torch.nan_to_num(losses)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return heads.eval().to(dtype=next(model.parameters()).dtype)


def default_tree(n_heads: int, top_k: int = 2) -> list[tuple[int, ...]]:
    """A small static tree: every path of top-``top_k`` choices for the first heads, capped at 1 + 2 + 4 + 4
    nodes; then the top-1 chain deeper. Each path (i0, i1, ...) means head 0's i0-th token, then head 1's i1-th..."""
    paths: list[tuple[int, ...]] = []
    frontier: list[tuple[int, ...]] = [()]
    for depth in range(n_heads):
        k = top_k if depth < 2 else 1
        frontier = [p + (i,) for p in frontier for i in range(k)]
        frontier = frontier[:4]
        paths += frontier
    return paths


def _tree_layout(tree: Sequence[Sequence[int]], n_heads: int) -> tuple[list[tuple[int, ...]], list[int]]:
    """Nodes (root first, then paths sorted by depth) and each node's parent index; checks the tree is valid."""
    paths = sorted({tuple(p) for p in tree}, key=lambda p: (len(p), p))
    nodes: list[tuple[int, ...]] = [()] + paths
    index = {p: i for i, p in enumerate(nodes)}
    parents = [-1]
    for p in paths:
        if not 1 <= len(p) <= n_heads:
            raise ValueError(f"tree path {p} is deeper than the {n_heads} heads (or empty)")
        if p[:-1] not in index:
            raise ValueError(f"tree path {p} has no parent {p[:-1]} in the tree")
        parents.append(index[p[:-1]])
    return nodes, parents


def tree_attention_mask(parents: Sequence[int], prefix_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive 4-D mask ``[1, 1, N, prefix_len + N]``: node i sees the cached prefix, its ancestors and itself."""
    n = len(parents)
    allowed = torch.zeros(n, prefix_len + n, dtype=torch.bool)  # built on the CPU, moved once
    allowed[:, :prefix_len] = True
    for i in range(n):
        j = i
        while j >= 0:
            allowed[i, prefix_len + j] = True
            j = parents[j]
    mask = torch.zeros(n, prefix_len + n, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None].to(device)


@dataclass
class MedusaStats:
    """Counts from one :func:`medusa_generate` run."""

    tree_size: int  # tokens verified per forward pass (root + tree nodes)
    forward_passes: int = 0  # model forward passes, prefill included
    new_tokens: int = 0  # tokens returned (after cutting at max_new_tokens / EOS)
    produced: int = 0  # tokens produced before that cut
    accept_lengths: list[int] = field(default_factory=list)  # candidate tokens accepted per tree pass

    @property
    def tokens_per_forward(self) -> float:
        """Tokens each pass yields (accepted + the model's next token; the prefill yields 1) before the cut at
        max_new_tokens / EOS, per model forward pass."""
        return self.produced / self.forward_passes if self.forward_passes else float("nan")

    @property
    def new_tokens_per_forward(self) -> float:
        """Tokens returned per model forward pass (after the cut: what a user gets)."""
        return self.new_tokens / self.forward_passes if self.forward_passes else float("nan")


@torch.no_grad()
def medusa_generate(
    model: PreTrainedModel,
    heads: MedusaHeads,
    prompt_ids: torch.Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    tree: Sequence[Sequence[int]] | None = None,
    posterior_threshold: float = 0.09,
    posterior_alpha: float = 0.3,
    temperature: float = 0.7,
    greedy: bool = True,
    stop_at_eos: bool = True,
) -> tuple[torch.Tensor, MedusaStats]:
    """Medusa decoding: the heads' top-k tokens form a static tree of candidates that the model verifies in one
    forward pass with a tree attention mask; the longest accepted path is kept (its KV entries too).

    ``tree``: paths of top-k indices (default :func:`default_tree`). Acceptance of a candidate x after node n:
    ``greedy=True``: x == argmax p_n (output equals greedy ``generate``); else typical acceptance
    ``p_n(x) > min(posterior_threshold, posterior_alpha * exp(-H(p_n)))`` with p_n = softmax(logits_n /
    temperature), ties between equally long paths broken by their summed log-probability. The token after the
    accepted path is always the model's argmax (Medusa accepts the first token greedily), so the run is
    deterministic. Returns ``([1, T + n] ids, stats)``.
    """
    device = _device(model)
    ids = _as_ids(prompt_ids, device)
    eos = _eos_ids(model, stop_at_eos)
    nodes, parents = _tree_layout(default_tree(heads.n_heads) if tree is None else tree, heads.n_heads)
    depth = torch.tensor([len(p) for p in nodes], device=device)
    head_of = [len(p) - 1 for p in nodes[1:]]
    rank_of = [p[-1] for p in nodes[1:]]
    top_k = max(rank_of) + 1 if rank_of else 1
    lm_head = model.get_output_embeddings()
    stats = MedusaStats(tree_size=len(nodes))
    seq: list[int] = ids[0].tolist()
    n_prompt = len(seq)
    cache = DynamicCache()
    # prefill: the first token (argmax) and the heads' guesses for the ones after it
    h = _decoder_states(model, ids, past_key_values=cache, use_cache=True)[0, -1]
    stats.forward_passes += 1
    root = int(lm_head(h).argmax())
    medusa_logits = heads(h)  # [K, V]
    new, done = _finish([root], max_new_tokens, eos)
    stats.produced += 1
    seq += new
    while not done and len(seq) - n_prompt < max_new_tokens:
        prefix = cache_length(cache)
        top = medusa_logits.topk(top_k, dim=-1).indices.tolist()  # [K][top_k]
        tokens = [seq[-1]] + [top[k][r] for k, r in zip(head_of, rank_of, strict=True)]
        mask = tree_attention_mask(parents, prefix, lm_head.weight.dtype, device)
        hs = _decoder_states(model, torch.tensor([tokens], device=device), past_key_values=cache, use_cache=True,
                             attention_mask=mask, position_ids=(prefix + depth)[None])[0]
        stats.forward_passes += 1
        logits = lm_head(hs).float()  # [N, V]
        ok = [True] + [False] * (len(nodes) - 1)
        score = [0.0] * len(nodes)
        if greedy:
            pred = logits.argmax(dim=-1).tolist()
            for i in range(1, len(nodes)):
                ok[i] = ok[parents[i]] and pred[parents[i]] == tokens[i]
        else:
            prob = torch.softmax(logits / temperature, dim=-1)
            entropy = -(prob * torch.log(prob + 1e-5)).sum(-1)
            thresh = torch.clamp(posterior_alpha * torch.exp(-entropy), max=posterior_threshold).tolist()
            cand = prob[torch.tensor(parents[1:], device=device), torch.tensor(tokens[1:], device=device)].tolist()
            for i in range(1, len(nodes)):
                ok[i] = ok[parents[i]] and cand[i - 1] > thresh[parents[i]]
                score[i] = score[parents[i]] + math.log(max(cand[i - 1], 1e-30))
        best = max((i for i in range(len(nodes)) if ok[i]), key=lambda i: (len(nodes[i]), score[i], -i))
        path = []
        j = best
        while j >= 0:
            path.append(j)
            j = parents[j]
        path.reverse()  # root ... best
        select_cache(cache, prefix, torch.tensor(path, device=device))
        accepted = [tokens[i] for i in path[1:]]
        nxt = int(logits[best].argmax())
        stats.accept_lengths.append(len(accepted))
        stats.produced += len(accepted) + 1
        new, done = _finish(accepted + [nxt], n_prompt + max_new_tokens - len(seq), eos)
        seq += new
        medusa_logits = heads(hs[best])
    stats.new_tokens = len(seq) - n_prompt
    return torch.tensor([seq], device=device), stats
