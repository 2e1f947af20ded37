"""Week 09 (09-inference) reference solutions: instructor-only, checked against independent oracles in
tests/weeks/ (transformers' ``generate``, torch SDPA, property tests, hand-worked cases)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

import torch

from sparkcourse.labs import w09_inference as lab

# ---------------------------------------------------------------------------------------------------------------
# 1. KV cache


class KVCache:
    """Per layer, the keys and values of every position so far, ``(batch, kv_heads, length, head_dim)``."""

    def __init__(self, n_layers: int):
        self.k: list = [None] * n_layers
        self.v: list = [None] * n_layers

    def __len__(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[2]


@torch.no_grad()
def forward_cached(model, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits of the new tokens ``ids`` (``(batch, T)``) after the ``len(cache)`` cached ones; appends their K/V."""
    start = len(cache)
    pos = torch.arange(start, start + ids.shape[1], device=ids.device)
    h = lab.embed(model, ids)
    for i in range(lab.num_layers(model)):
        q, k, v = lab.layer_qkv(model, i, h, pos)
        cache.k[i] = k if cache.k[i] is None else torch.cat([cache.k[i], k], 2)
        cache.v[i] = v if cache.v[i] is None else torch.cat([cache.v[i], v], 2)
        h = lab.layer_out(model, i, h, lab.attend(q, cache.k[i], cache.v[i]))
    return lab.logits(model, h)


@torch.no_grad()
def greedy_generate(model, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding with a KV cache: the new tokens, ``(batch, max_new_tokens)``."""
    cache = KVCache(lab.num_layers(model))
    nxt = forward_cached(model, prompt_ids, cache)[:, -1:].argmax(-1)
    out = [nxt]
    for _ in range(max_new_tokens - 1):
        nxt = forward_cached(model, nxt, cache)[:, -1:].argmax(-1)
        out.append(nxt)
    return torch.cat(out, 1)


# ---------------------------------------------------------------------------------------------------------------
# 2. Paged KV blocks


def block_hashes(tokens: Sequence[int], block_size: int) -> list[int]:
    """One hash per FULL block of ``tokens``, each covering the block's tokens and everything before them."""
    out, prev = [], None
    for start in range(0, len(tokens) - block_size + 1, block_size):
        prev = hash((prev, tuple(int(t) for t in tokens[start:start + block_size])))
        out.append(prev)
    return out


class BlockManager:
    """Physical KV blocks with reference counts, per-sequence block tables, prefix sharing of full prompt blocks by
    hash, fork with copy-on-write of a shared last block. Free blocks are handed out lowest id first."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.ref_count = [0] * num_blocks
        self.tables: dict = {}
        self.lengths: dict = {}
        self._free = list(range(num_blocks))
        heapq.heapify(self._free)
        self._by_hash: dict[int, int] = {}
        self._hash_of: dict[int, int] = {}

    def num_free(self) -> int:
        return len(self._free)

    def _take(self) -> int:
        if not self._free:
            raise MemoryError("no free KV block")
        b = heapq.heappop(self._free)
        self.ref_count[b] = 1
        return b

    def _release(self, b: int) -> None:
        self.ref_count[b] -= 1
        if self.ref_count[b] == 0:
            h = self._hash_of.pop(b, None)
            if h is not None:
                del self._by_hash[h]
            heapq.heappush(self._free, b)

    def add_sequence(self, seq_id, tokens: Sequence[int]) -> int:
        """Blocks for a new prompt; returns how many leading tokens were found cached (shared blocks)."""
        hashes = block_hashes(tokens, self.block_size)
        table, cached = [], 0
        n_blocks = -(-len(tokens) // self.block_size)
        for j in range(n_blocks):
            h = hashes[j] if j < len(hashes) else None
            if h is not None and cached == j * self.block_size and h in self._by_hash:
                b = self._by_hash[h]
                self.ref_count[b] += 1
                cached += self.block_size
            else:
                b = self._take()
                if h is not None:
                    self._by_hash[h], self._hash_of[b] = b, h
            table.append(b)
        self.tables[seq_id], self.lengths[seq_id] = table, len(tokens)
        return cached

    def fork(self, parent, child) -> None:
        """``child`` shares every block of ``parent``."""
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        for b in self.tables[child]:
            self.ref_count[b] += 1

    def append_token(self, seq_id, token: int):
        """Room for one more token: ``(block, offset, copy)`` with ``copy`` None or ``(src, dst)`` to copy first."""
        table, n = self.tables[seq_id], self.lengths[seq_id]
        offset, copy = n % self.block_size, None
        if offset == 0:
            table.append(self._take())
        elif self.ref_count[table[-1]] > 1:
            new = self._take()
            copy = (table[-1], new)
            self._release(table[-1])
            table[-1] = new
        self.lengths[seq_id] = n + 1
        return table[-1], offset, copy

    def free(self, seq_id) -> None:
        """Release a finished sequence's blocks."""
        for b in self.tables.pop(seq_id):
            self._release(b)
        del self.lengths[seq_id]


def paged_attention(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_tables, seq_lens):
    """Decode attention of one query per sequence over its paged keys/values: ``(batch, heads, d)``."""
    outs = []
    bs = k_pool.shape[1]
    for b, (table, n) in enumerate(zip(block_tables, seq_lens, strict=True)):
        idx = torch.as_tensor([table[p // bs] for p in range(n)])
        off = torch.arange(n) % bs
        k, v = k_pool[idx, off], v_pool[idx, off]  # (n, kv_heads, d)
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        w = torch.softmax(torch.einsum("hd,nhd->hn", q[b], k) / math.sqrt(q.shape[-1]), -1)
        outs.append(torch.einsum("hn,nhd->hd", w, v))
    return torch.stack(outs)


def kv_waste(lengths: Sequence[int], block_size: int, max_len: int) -> tuple[float, float]:
    """Wasted fractions of the reserved KV slots: contiguous (``max_len`` per request), paged (whole blocks)."""
    used = sum(lengths)
    paged = sum(-(-n // block_size) * block_size for n in lengths)
    return 1 - used / (len(lengths) * max_len), 1 - used / paged


# ---------------------------------------------------------------------------------------------------------------
# 5. Batching


def static_batching(requests, max_batch: int, step_time: Callable) -> list[float]:
    """Finish time of each request under request-level (static) batching."""
    finish = [0.0] * len(requests)
    clock, nxt = 0.0, 0
    while nxt < len(requests):
        clock = max(clock, requests[nxt][0])
        batch = []
        while nxt < len(requests) and len(batch) < max_batch and requests[nxt][0] <= clock:
            batch.append(nxt)
            nxt += 1
        clock += step_time(0, sum(requests[i][1] for i in batch))
        produced = 1
        for i in batch:
            if requests[i][2] == 1:
                finish[i] = clock
        while produced < max(requests[i][2] for i in batch):
            clock += step_time(len(batch), 0)
            produced += 1
            for i in batch:
                if requests[i][2] == produced:
                    finish[i] = clock
    return finish


def continuous_batching(requests, max_batch: int, step_time: Callable) -> list[float]:
    """Finish time of each request under iteration-level (continuous) batching."""
    finish = [0.0] * len(requests)
    made = [0] * len(requests)
    running: list[int] = []
    clock, nxt = 0.0, 0
    while nxt < len(requests) or running:
        if not running and requests[nxt][0] > clock:
            clock = requests[nxt][0]
        admitted = []
        while nxt < len(requests) and len(running) + len(admitted) < max_batch and requests[nxt][0] <= clock:
            admitted.append(nxt)
            nxt += 1
        clock += step_time(len(running), sum(requests[i][1] for i in admitted))
        still = []
        for i in running + admitted:
            made[i] += 1
            if made[i] == requests[i][2]:
                finish[i] = clock
            else:
                still.append(i)
        running = still
    return finish


# ---------------------------------------------------------------------------------------------------------------
# 7. Speculative sampling


def speculative_step(p: torch.Tensor, q: torch.Tensor, draft, u, sample: Callable) -> list[int]:
    """One verification of ``gamma`` draft tokens (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023)."""
    gamma = len(draft)
    out = []
    for i in range(gamma):
        d = int(draft[i])
        if u[i] * q[i, d] < p[i, d]:  # u < min(1, p/q) without the division
            out.append(d)
            continue
        residual = (p[i] - q[i]).clamp(min=0)
        out.append(int(sample(residual / residual.sum())))
        return out
    out.append(int(sample(p[gamma])))
    return out


def expected_acceptance(p: torch.Tensor, q: torch.Tensor) -> float:
    """beta = E_{x~q} min(1, p(x)/q(x)) = sum_x min(p(x), q(x))."""
    return float(torch.minimum(p, q).sum())


def outcome_distribution(step: Callable, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The EXACT joint distribution of the first ``gamma + 1`` tokens emitted by ``step(p, q, draft, u, sample)``
    followed by exact sampling from the target: a context-free model (row ``i`` of ``p``/``q`` is position ``i``'s
    distribution), the draft tokens enumerated with their probabilities under ``q``, each position's acceptance
    region of ``u`` found by bisection (the step must decide position ``i`` from ``u[i]`` alone, accepting on one
    interval), and the distribution of a resampled token read from what ``step`` passes to ``sample``.

    An exact sampler returns ``p[0] ⊗ p[1] ⊗ … ⊗ p[gamma]``. Raises AssertionError when every draft token is
    accepted and no bonus token follows."""
    gamma, V = q.shape
    sent = 10**6
    top = math.nextafter(1.0, 0.0)

    def run(draft, u):
        rec = []

        def sample(probs):
            probs = torch.as_tensor(probs, dtype=torch.float64).detach().clone()
            rec.append(probs / probs.sum())
            return sent

        out = step(p, q, torch.tensor(draft), torch.tensor(u, dtype=torch.float64), sample)
        return [int(t) for t in out], rec

    def rejected(out, i):
        return len(out) == i + 1 and out[i] == sent

    joint = torch.zeros((V,) * (gamma + 1), dtype=torch.float64)

    def outer(rows):
        t = rows[0]
        for r in rows[1:]:
            t = t[..., None] * r
        return t

    for draft in __import__("itertools").product(range(V), repeat=gamma):
        w = math.prod(float(q[i, d]) for i, d in enumerate(draft))
        if w == 0:
            continue
        prefix_u: list[float] = []
        reach = w
        for i in range(gamma):
            def accepted(x, i=i, draft=draft, prefix_u=prefix_u):
                out, _ = run(list(draft), prefix_u + [x] + [0.0] * (gamma - i - 1))
                return not rejected(out, i)

            a0, a1 = accepted(0.0), accepted(top)
            if a0 == a1:
                acc, u_acc, u_rej = (1.0, 0.0, None) if a0 else (0.0, None, 0.0)
            else:
                lo, hi = 0.0, top
                for _ in range(64):
                    mid = (lo + hi) / 2
                    lo, hi = (mid, hi) if accepted(mid) == a0 else (lo, mid)
                acc, u_acc, u_rej = (lo, 0.0, top) if a0 else (1 - lo, top, 0.0)
            if u_rej is not None:
                out, rec = run(list(draft), prefix_u + [u_rej] + [0.0] * (gamma - i - 1))
                rows = [torch.nn.functional.one_hot(torch.tensor(d), V).double() for d in draft[:i]]
                joint += reach * (1 - acc) * outer(rows + [rec[-1]] + [p[j] for j in range(i + 1, gamma + 1)])
            if u_acc is None:
                break
            reach *= acc
            prefix_u.append(u_acc)
        else:
            out, rec = run(list(draft), prefix_u)
            assert len(out) == gamma + 1 and rec, "every draft token accepted: a bonus token must follow"
            rows = [torch.nn.functional.one_hot(torch.tensor(d), V).double() for d in draft]
            joint += reach * outer(rows + [rec[-1]])
    return joint
