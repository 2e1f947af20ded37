# %% markdown
# # Week 09 — How an inference engine serves a model: KV cache, paged blocks, batching, speculative sampling
#
# Training is done; now the model has to answer many people at once. Every serving engine a DGX Spark runs —
# vLLM, SGLang, TensorRT-LLM, llama.cpp — is built on the same few ideas: keep the keys and values of past tokens
# (the **KV cache**) instead of recomputing them, store that cache in fixed-size **pages** so that memory is not
# reserved for tokens that never come, admit and retire requests at every step (**continuous batching**), reuse
# the cache of a shared prefix (**prefix caching**), and let a cheap guesser propose several tokens that the big
# model checks in one pass (**speculative decoding**). On a Spark the weights and the KV cache share the same
# 128 GB, and decoding one token reads every weight once at ~273 GB/s: how the cache is kept decides how many
# users fit, and speculative decoding is the main way to get more than one token per read of the weights.
#
# **You will learn to**
# 1. write a KV cache for the course's tiny Llama, token-identical to transformers' `generate`, and measure what
#    it saves;
# 2. write a paged block manager (block tables, reference counts, copy-on-write on fork, prefix sharing by
#    block hashes) and attention that reads keys and values through a block table;
# 3. measure the memory that contiguous pre-allocation wastes against paging on a stated length distribution;
# 4. simulate static and continuous batching on a seeded arrival trace with a cost model calibrated on the tiny
#    LM, and compare throughput and p50/p99 latency;
# 5. see a radix-tree prefix cache (SGLang) hit on multi-turn and few-shot workloads;
# 6. write the verification step of speculative sampling and prove, exactly, that it samples from the target.
#
# **Time:** about 4 hours. **Points:** 21, all autograded (the measurements are not graded).

# %% setup id=setup
import math

import numpy as np
import torch
import torch.nn.functional as F

import sparkcourse as sc
from sparkcourse.labs import w09_inference as lab
from sparkcourse.models import load_tiny_lm
from sparkcourse.testing import check_close, check_number, check_property

profile = sc.setup()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FULL = profile.is_spark and DEVICE.type == "cuda"
if DEVICE.type == "cpu":
    # a model this small gains nothing from a second CPU thread, and on a busy machine threads that wait for each
    # other make every forward pass many times slower (measured here: 0.4 s vs 19 s for the same calibration)
    torch.set_num_threads(1)
# float64 on the CPU: greedy decoding compares argmaxes, and float64 keeps two correct computations from
# breaking a near-tie differently
model, tokenizer = load_tiny_lm(torch.float64)
N_LAYERS = lab.num_layers(model)


class KVCache:
    """Given: per layer, the keys and values of every position so far, each ``(batch, kv_heads, length, head_dim)``
    (None before the first token). ``len(cache)`` is the number of cached positions."""

    def __init__(self, n_layers):
        self.k = [None] * n_layers
        self.v = [None] * n_layers

    def __len__(self):
        return 0 if self.k[0] is None else self.k[0].shape[2]


def prompt_ids(text):
    """The tiny LM's token ids of ``text``, ``(1, T)``."""
    return tokenizer(text, return_tensors="pt").input_ids


def hf_greedy(ids, n):
    """transformers' own greedy decoding of up to ``n`` new tokens (it stops after an end-of-sequence token)."""
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[:, ids.shape[1]:]

# %% markdown
# ## 1. The KV cache
#
# A decoder computes, at every layer, a query, a key and a value for each token; token $t$ attends to the keys
# and values of tokens $0..t$. Without a cache, generating token $t+1$ recomputes the keys and values of all $t$
# earlier tokens, which never change: $O(t)$ work per layer that the cache turns into a look-up. With a cache,
# generation has two phases: the **prefill** runs the whole prompt at once and stores its keys and values; each
# **decode** step runs one new token, appends its key and value and attends over everything stored.
#
# Two details decide whether the cached model computes exactly what the uncached one does:
# - **positions.** RoPE rotates queries and keys by their position. The new tokens of a step sit at positions
#   `len(cache), len(cache) + 1, …` — not `0, 1, …`;
# - **masking.** The `T` new queries are the last `T` of `S` positions: query `j` sees keys `0 .. S - T + j`.
#   The given `lab.attend(q, k, v)` does that (it calls torch's SDPA with that mask).
#
# The lab gives the pieces of a transformers Llama layer: `lab.embed(model, ids)`,
# `lab.layer_qkv(model, i, hidden, positions)` (RMSNorm, projections and RoPE at `positions`; `q` is
# `(batch, heads, T, d)`, `k, v` are `(batch, kv_heads, T, d)`), `lab.attend(q, k, v)`,
# `lab.layer_out(model, i, hidden, attn_out)` (output projection, residual, MLP) and `lab.logits(model, hidden)`.
# `lab.greedy_without_cache` strings them together without a cache — read it first.
#
# ### Exercise 1 (4 points)
# - `forward_cached(model, ids, cache)`: `ids` are `T ≥ 1` new tokens `(batch, T)` that follow the `len(cache)`
#   tokens already in `cache` (a `KVCache`). Run them through every layer, appending their keys and values to
#   the cache, and return the logits of the new tokens, `(batch, T, vocab)`.
# - `greedy_generate(model, prompt_ids, max_new_tokens)`: prefill the prompt once, then decode one token per step
#   from the cache, always taking the most likely token. Return the new tokens, `(batch, max_new_tokens)`.
#   The hidden tests compare with transformers' `generate(do_sample=False)`.

# %% solution id=kv_cache
@torch.no_grad()
def forward_cached(model, ids, cache):
    """Logits of the new tokens ``ids``; their keys and values are appended to ``cache``."""
    ### BEGIN SOLUTION
    past = len(cache)
    positions = torch.arange(past, past + ids.shape[1])
    hidden = lab.embed(model, ids)
    for i in range(lab.num_layers(model)):
        q, k, v = lab.layer_qkv(model, i, hidden, positions)
        if cache.k[i] is not None:
            k, v = torch.cat((cache.k[i], k), dim=2), torch.cat((cache.v[i], v), dim=2)
        cache.k[i], cache.v[i] = k, v
        hidden = lab.layer_out(model, i, hidden, lab.attend(q, k, v))
    return lab.logits(model, hidden)
    ### END SOLUTION


@torch.no_grad()
def greedy_generate(model, prompt_ids, max_new_tokens):
    """Greedy decoding with a KV cache; returns the new tokens ``(batch, max_new_tokens)``."""
    ### BEGIN SOLUTION
    cache = KVCache(lab.num_layers(model))
    step_input, new = prompt_ids, []
    for _ in range(max_new_tokens):
        step_input = forward_cached(model, step_input, cache)[:, -1].argmax(-1, keepdim=True)
        new.append(step_input)
    return torch.cat(new, dim=1)
    ### END SOLUTION

# %% tests id=test_kv_cache points=4
_ids = prompt_ids("Once upon a time")
_cache = KVCache(N_LAYERS)
_first = forward_cached(model, _ids, _cache)
check_property(tuple(_first.shape) == (1, _ids.shape[1], model.config.vocab_size),
               f"forward_cached should return (batch, T, vocab) logits, got {tuple(_first.shape)}")
check_property(len(_cache) == _ids.shape[1], f"after the prompt the cache should hold {_ids.shape[1]} positions, "
               f"it holds {len(_cache)}")
_next = torch.tensor([[17]])
with torch.no_grad():
    _full = model(torch.cat([_ids, _next], 1)).logits
check_close(forward_cached(model, _next, _cache)[0, -1], _full[0, -1], rtol=1e-8, atol=1e-8,
            name="logits of one token decoded from the cache vs the full forward (check the new token's position)")
check_property(torch.equal(greedy_generate(model, _ids, 6), lab.greedy_without_cache(model, _ids, 6)),
               "greedy_generate differs from lab.greedy_without_cache on 6 tokens")
### BEGIN HIDDEN TESTS
for _text, _n in (("The little dog", 16), ("Tom and Sue", 12)):
    _p = prompt_ids(_text)
    _got, _hf = greedy_generate(model, _p, _n), hf_greedy(_p, _n)
    check_property(tuple(_got.shape) == (1, _n), f"greedy_generate should return (1, {_n}), got {tuple(_got.shape)}")
    check_property(_hf.shape[1] >= 8 and torch.equal(_got[:, :_hf.shape[1]], _hf),
                   f"greedy tokens differ from transformers' generate for {_text!r}: {_got.tolist()} vs "
                   f"{_hf.tolist()} (generate stops after the end-of-sequence token 2)")
    check_property(torch.equal(_got, lab.greedy_without_cache(model, _p, _n)),
                   f"greedy tokens differ from decoding without a cache for {_text!r}")
_g = torch.Generator().manual_seed(5)
_seq = torch.randint(3, model.config.vocab_size, (3, 13), generator=_g)
_c = KVCache(N_LAYERS)
_parts = [forward_cached(model, _seq[:, a:b], _c) for a, b in ((0, 4), (4, 5), (5, 9), (9, 10), (10, 13))]
with torch.no_grad():
    check_close(torch.cat(_parts, 1), model(_seq).logits, rtol=1e-8, atol=1e-8,
                name="logits of a batch of 3 fed in chunks of 4, 1, 4, 1, 3 tokens vs one full forward")
check_property(len(_c) == 13, f"the cache should hold 13 positions after 13 tokens, it holds {len(_c)}")
check_property(all(_c.k[i].shape == (3, model.config.num_key_value_heads, 13, 20) for i in range(N_LAYERS)),
               "every layer's cached keys should be (batch, kv_heads, positions, head_dim)")
### END HIDDEN TESTS

# %% markdown
# **What the cache saves.** Time per generated token with and without the cache (the tiny model on this machine;
# at this size Python overhead is a large part of each step, so the gap grows with the length generated):

# %%
if sc.grading():
    print("skipped while grading")
else:
    try:
        _p = prompt_ids("Once upon a time there was a little")
        for n in (8, 32, 96):
            with_cache = lab.time_per_token(greedy_generate, model, _p, [n])[0]
            without = lab.time_per_token(lab.greedy_without_cache, model, _p, [n])[0]
            print(f"{n:3d} new tokens: {with_cache * 1e3:6.2f} ms/token with the cache, {without * 1e3:6.2f} without "
                  f"({without / with_cache:.1f}x)")
    except NotImplementedError:
        print("finish Exercise 1 first")

# %% markdown
# ## 2. Paged KV blocks
#
# An engine that reserves, for every request, one contiguous cache of the maximum length wastes the memory of
# every token the request never produces. **PagedAttention** (Kwon et al., *Efficient Memory Management for Large
# Language Model Serving with PagedAttention*, SOSP 2023) cuts the cache into fixed-size **blocks** of
# `block_size` tokens, like an operating system's pages: each sequence has a **block table** mapping its logical
# blocks to physical ones, allocated one at a time as the sequence grows. Blocks can then be *shared*:
# - **fork** (parallel sampling, beam search): the child gets a copy of the parent's block table and every block's
#   **reference count** goes up by one. Nothing is copied until one of them writes into a shared block: then that
#   writer gets a private copy first (**copy-on-write**) and the old block's count goes down;
# - **prefix sharing**: a full block is identified by a hash of its tokens *and of all tokens before it* (the key
#   and value of a token depend on its whole prefix). A new prompt whose leading full blocks hash like blocks
#   already held reuses them, and their keys and values need not be computed again.
#
# A block goes back to the free pool only when its reference count reaches zero. Real block managers go
# further: nano-vllm's `BlockManager` (`nanovllm/engine/block_manager.py`) chains an xxhash over the previous
# block's hash, compares the tokens on a hit (a hash collision must not share the wrong keys), keeps a freed
# block's hash so that a later prompt can still reuse it until the block is handed out again, and registers
# blocks that decoding fills; vLLM's v1 `KVCacheManager` / `BlockPool` does the same with a least-recently-used
# queue of free cached blocks. Neither forks: vLLM's copy-on-write for parallel sampling lived in its v0
# block manager.
#
# ### Exercise 2 (6 points)
# - `block_hashes(tokens, block_size)`: one hash per **full** block of `tokens` (a trailing partial block gets
#   none); the hash of block `j` must depend on the tokens of blocks `0..j`. Any hash function will do (Python's
#   `hash` of a tuple is fine).
# - `BlockManager(num_blocks, block_size)` with attributes `ref_count` (a list, one count per physical block),
#   `tables` (a dict: sequence id → list of physical block ids), and methods:
#   - `num_free()`: how many blocks are free (reference count 0);
#   - `add_sequence(seq_id, tokens)`: give a new prompt its blocks. Reuse the physical block of each leading full
#     block whose hash belongs to a block held by a live sequence (stop at the first block that is not found);
#     register every newly allocated full block of the prompt under its hash. Return the number of prompt tokens
#     found cached (a multiple of `block_size`);
#   - `fork(parent_id, child_id)`: the child shares all of the parent's blocks;
#   - `append_token(seq_id, token)`: make room for the sequence's next token and return `(block, offset, copy)`:
#     the physical block and offset where its key and value go, and `copy` = `(src, dst)` when the last block
#     was shared and has just been copied to `dst` (the engine copies the contents), else `None`. A token that
#     starts a new logical block gets a new physical block. Blocks filled by appended tokens are not registered
#     for sharing;
#   - `free(seq_id)`: the sequence is finished; release its blocks (a block whose count reaches zero is free again,
#     and no longer found by its hash).
#   When no block is free, raise `MemoryError`. Two private helpers, `_new_block()` and `_drop(block)`, are
#   there to fill in if you want them (the tests call only the methods above).
#
# The hidden tests run random workloads (prompts with shared stems, forks, appends, frees) and check, after every
# operation, that each sequence reads back its own tokens through its block table, that every reference count
# equals the number of table entries pointing at the block, and that the number of free blocks and of cached
# tokens is what it should be.

# %% solution id=paged_blocks
def block_hashes(tokens, block_size):
    """A hash for each full block, chained over the blocks before it."""
    ### BEGIN SOLUTION
    n_full = len(tokens) // block_size
    return [hash(tuple(int(t) for t in tokens[: (j + 1) * block_size])) for j in range(n_full)]
    ### END SOLUTION


class BlockManager:
    """Paged KV blocks: block tables, reference counts, copy-on-write, prefix sharing by hash."""

    def __init__(self, num_blocks, block_size):
        ### BEGIN SOLUTION
        self.block_size = block_size
        self.ref_count = [0] * num_blocks
        self.tables = {}
        self.length = {}
        self.free_list = list(range(num_blocks - 1, -1, -1))
        self.block_of_hash, self.hash_of_block = {}, {}
        ### END SOLUTION

    def num_free(self):
        """How many blocks have reference count 0."""
        ### BEGIN SOLUTION
        return len(self.free_list)
        ### END SOLUTION

    def _new_block(self):
        """A helper you may use: take a free block, set its count to 1 (MemoryError when none is free)."""
        ### BEGIN SOLUTION
        if not self.free_list:
            raise MemoryError("out of KV blocks")
        block = self.free_list.pop()
        self.ref_count[block] = 1
        return block
        ### END SOLUTION

    def _drop(self, block):
        """A helper you may use: drop one reference to ``block``; at zero it is free and forgotten by its hash."""
        ### BEGIN SOLUTION
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            if block in self.hash_of_block:
                del self.block_of_hash[self.hash_of_block.pop(block)]
            self.free_list.append(block)
        ### END SOLUTION

    def add_sequence(self, seq_id, tokens):
        """Blocks for a new prompt; returns the number of leading tokens found cached."""
        ### BEGIN SOLUTION
        hashes = block_hashes(tokens, self.block_size)
        table, hits = [], 0
        for j, h in enumerate(hashes):
            if hits == j and h in self.block_of_hash:
                block = self.block_of_hash[h]
                self.ref_count[block] += 1
                hits += 1
            else:
                block = self._new_block()
                self.block_of_hash[h], self.hash_of_block[block] = block, h
            table.append(block)
        if len(tokens) % self.block_size:
            table.append(self._new_block())
        self.tables[seq_id], self.length[seq_id] = table, len(tokens)
        return hits * self.block_size
        ### END SOLUTION

    def fork(self, parent_id, child_id):
        """The child shares every block of the parent."""
        ### BEGIN SOLUTION
        self.tables[child_id] = self.tables[parent_id].copy()
        self.length[child_id] = self.length[parent_id]
        for block in self.tables[child_id]:
            self.ref_count[block] += 1
        ### END SOLUTION

    def append_token(self, seq_id, token):
        """Room for the next token: ``(block, offset, copy)``, ``copy`` = ``(src, dst)`` or None."""
        ### BEGIN SOLUTION
        table = self.tables[seq_id]
        offset = self.length[seq_id] % self.block_size
        copy = None
        if offset == 0:
            table.append(self._new_block())
        elif self.ref_count[table[-1]] > 1:
            fresh = self._new_block()
            copy = (table[-1], fresh)
            self._drop(table[-1])
            table[-1] = fresh
        self.length[seq_id] += 1
        return table[-1], offset, copy
        ### END SOLUTION

    def free(self, seq_id):
        """Release a finished sequence's blocks."""
        ### BEGIN SOLUTION
        for block in self.tables.pop(seq_id):
            self._drop(block)
        del self.length[seq_id]
        ### END SOLUTION

# %% tests id=test_block_hashes points=1
_h = block_hashes([5, 6, 7, 8, 9, 10, 11], 2)
check_property(len(_h) == 3, f"7 tokens in blocks of 2: 3 full blocks, so 3 hashes (got {len(_h)})")
check_property(_h == block_hashes([5, 6, 7, 8, 9, 10, 99], 2), "the partial last block must not change the hashes")
check_property(block_hashes([1, 2, 3, 4], 2)[1] != block_hashes([0, 2, 3, 4], 2)[1],
               "block [3, 4] after [1, 2] and after [0, 2] must hash differently: its keys and values depend on "
               "the prefix")
### BEGIN HIDDEN TESTS
import random as _random

_r = _random.Random(0)
for _ in range(30):
    _bs = _r.randrange(1, 6)
    _a = [_r.randrange(4) for _ in range(_r.randrange(0, 20))]
    _b = [_r.randrange(4) for _ in range(_r.randrange(0, 20))]
    _ha, _hb = block_hashes(_a, _bs), block_hashes(_b, _bs)
    check_property(len(_ha) == len(_a) // _bs, f"{len(_a)} tokens in blocks of {_bs}: {len(_a) // _bs} hashes")
    for _j in range(min(len(_ha), len(_hb))):
        _same = _a[:(_j + 1) * _bs] == _b[:(_j + 1) * _bs]
        check_property((_ha[_j] == _hb[_j]) == _same,
                       f"block {_j} (size {_bs}) of {_a} and {_b}: hashes should be equal exactly when the "
                       "tokens up to the end of the block are")
### END HIDDEN TESTS

# %% tests id=test_block_manager points=5
_bm = BlockManager(8, 4)
check_property(_bm.add_sequence("a", [1, 2, 3, 4, 5, 6]) == 0 and _bm.num_free() == 6,
               "a 6-token prompt in blocks of 4 takes 2 blocks, none cached")
check_property(_bm.add_sequence("b", [1, 2, 3, 4, 9]) == 4, "prompt b shares a's first full block: 4 cached tokens")
check_property(_bm.tables["a"][0] == _bm.tables["b"][0] and _bm.ref_count[_bm.tables["a"][0]] == 2,
               "the shared first block should appear in both tables with reference count 2")
_bm.fork("a", "c")
_last = _bm.tables["a"][1]
_blk, _off, _copy = _bm.append_token("c", 7)
check_property(_off == 2 and _copy == (_last, _blk) and _blk != _last,
               f"c writes into a block it shares with a: expected a copy ({_last}, new block) at offset 2, "
               f"got block {_blk}, offset {_off}, copy {_copy}")
check_property(_bm.append_token("a", 8) == (_last, 2, None), "a's last block is no longer shared: no copy")
_blk, _off, _ = _bm.append_token("a", 9)
_blk2, _off2, _ = _bm.append_token("a", 10)
check_property(_off2 == 0 and _bm.tables["a"][-1] == _blk2 and len(_bm.tables["a"]) == 3,
               "the 9th token starts a new block: it must be allocated and appended to a's block table")
_bm.free("a")
check_property(_bm.ref_count[_bm.tables["b"][0]] == 2 and _bm.num_free() == 5,
               "freeing a must release only its own blocks, not the first block that b and c still share "
               f"(ref counts {_bm.ref_count}, {_bm.num_free()} free, expected 5)")
_bm.free("b")
_bm.free("c")
check_property(_bm.num_free() == 8 and all(r == 0 for r in _bm.ref_count),
               f"after every sequence is freed all 8 blocks should be free (ref counts {_bm.ref_count})")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w09_inference as _ref


def _content_check(bm, seqs, pool, nb, bs, where):
    counts = [0] * nb
    for s, toks in seqs.items():
        table = list(bm.tables[s])
        check_property(len(table) == -(-len(toks) // bs),
                       f"{where}: sequence {s} of {len(toks)} tokens should map {-(-len(toks) // bs)} blocks, "
                       f"its table has {len(table)}")
        for b in table:
            counts[b] += 1
        for p in range(len(toks)):
            check_property(pool.get((table[p // bs], p % bs)) == tuple(toks[:p + 1]),
                           f"{where}: sequence {s} reads the wrong key/value at position {p} through its block "
                           "table (a shared block written without a copy, a freed block reused while mapped, or a "
                           "block shared with a different prefix)")
    got = [bm.ref_count[b] for b in range(nb)]
    check_property(min(got) >= 0, f"{where}: a reference count went negative: {got}")
    check_property(got == counts, f"{where}: reference counts {got} differ from the table entries {counts}")
    check_property(bm.num_free() == counts.count(0),
                   f"{where}: num_free() is {bm.num_free()} but {counts.count(0)} blocks are mapped by no sequence")


for _seed in range(5):
    _rng = _random.Random(_seed)
    _nb, _bs = 48, _rng.choice([2, 3, 4])
    _bm, _oracle = BlockManager(_nb, _bs), _ref.BlockManager(_nb, _bs)
    _seqs, _pool, _nid = {}, {}, 0
    _stems = [[_rng.randrange(40) for _ in range(_rng.randrange(1, 12))] for _ in range(3)]
    for _step in range(90):
        _where = f"random workload {_seed}, step {_step}"
        _op = _rng.random()
        if _op < 0.25 and _oracle.num_free() > 8:
            _toks = list(_rng.choice(_stems)) + [_rng.randrange(40) for _ in range(_rng.randrange(0, 6))]
            _cached, _want = _bm.add_sequence(_nid, _toks), _oracle.add_sequence(_nid, _toks)
            check_number(_cached, _want, rtol=0, name=f"{_where}: cached tokens of prompt {_toks}")
            for _p in range(_cached, len(_toks)):
                _pool[(_bm.tables[_nid][_p // _bs], _p % _bs)] = tuple(_toks[:_p + 1])
            _seqs[_nid], _nid = _toks, _nid + 1
        elif _op < 0.4 and _seqs and _oracle.num_free() > 8:
            _parent = _rng.choice(sorted(_seqs))
            _bm.fork(_parent, _nid)
            _oracle.fork(_parent, _nid)
            _seqs[_nid], _nid = list(_seqs[_parent]), _nid + 1
        elif _op < 0.85 and _seqs and _oracle.num_free() > 2:
            _s, _tok = _rng.choice(sorted(_seqs)), _rng.randrange(40)
            _blk, _off, _copy = _bm.append_token(_s, _tok)
            _oracle.append_token(_s, _tok)
            if _copy is not None:
                for _o in range(_bs):
                    if (_copy[0], _o) in _pool:
                        _pool[(_copy[1], _o)] = _pool[(_copy[0], _o)]
            _seqs[_s].append(_tok)
            check_number(_off, (len(_seqs[_s]) - 1) % _bs, rtol=0, name=f"{_where}: offset of the appended token")
            _pool[(_blk, _off)] = tuple(_seqs[_s])
        elif _seqs:
            _s = _rng.choice(sorted(_seqs))
            _bm.free(_s)
            _oracle.free(_s)
            del _seqs[_s]
        _content_check(_bm, _seqs, _pool, _nb, _bs, _where)
        check_number(_bm.num_free(), _oracle.num_free(), rtol=0, name=f"{_where}: free blocks")
_tight = BlockManager(2, 2)
_tight.add_sequence(0, [1, 2, 3, 4])
try:
    _tight.append_token(0, 5)
    check_property(False, "appending with no free block should raise MemoryError")
except MemoryError:
    pass
### END HIDDEN TESTS

# %% markdown
# ## 3. Attention through a block table
#
# With paging, a sequence's keys and values are scattered over the physical pool. The pools have shape
# `(num_blocks, block_size, kv_heads, head_dim)`; position `p` of a sequence with block table `table` lives in
# block `table[p // block_size]` at offset `p % block_size`. vLLM's PagedAttention kernel reads them in place;
# here we gather and compute.
#
# ### Exercise 3 (3 points)
# `paged_attention(q, k_pool, v_pool, block_tables, seq_lens)`: one decode query per sequence, `q` of shape
# `(batch, heads, head_dim)`; sequence `b` has `seq_lens[b]` tokens mapped by `block_tables[b]` (its last block may
# be partly filled: ignore the slots past the end). Return the attention output `(batch, heads, head_dim)` with the
# usual $1/\sqrt{d}$ scale and no mask (the query is the newest token, it sees all of them). With grouped-query
# attention (`heads` a multiple of `kv_heads`), query head `h` uses key/value head `h // (heads // kv_heads)`,
# as transformers' `repeat_kv` does.

# %% solution id=paged_attention
def paged_attention(q, k_pool, v_pool, block_tables, seq_lens):
    """Decode attention over keys/values stored in blocks; returns (batch, heads, head_dim)."""
    ### BEGIN SOLUTION
    block_size = k_pool.shape[1]
    out = torch.empty_like(q)
    for b, (table, n) in enumerate(zip(block_tables, seq_lens, strict=True)):
        k = k_pool[torch.as_tensor(table)].flatten(0, 1)[:n]  # (n, kv_heads, d)
        v = v_pool[torch.as_tensor(table)].flatten(0, 1)[:n]
        group = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(group, dim=1).transpose(0, 1)  # (heads, n, d)
        v = v.repeat_interleave(group, dim=1).transpose(0, 1)
        scores = (k @ q[b].unsqueeze(-1)).squeeze(-1) / math.sqrt(q.shape[-1])
        out[b] = (scores.softmax(-1).unsqueeze(1) @ v).squeeze(1)
    del block_size
    return out
    ### END SOLUTION

# %% tests id=test_paged_attention points=3
_g = torch.Generator().manual_seed(0)
_kp, _vp = torch.randn(6, 4, 1, 8, generator=_g, dtype=torch.float64), torch.randn(6, 4, 1, 8, generator=_g,
                                                                                    dtype=torch.float64)
_q = torch.randn(1, 1, 8, generator=_g, dtype=torch.float64)
_k = torch.cat([_kp[3], _kp[1]])[:6].permute(1, 0, 2)  # blocks 3 then 1, 6 tokens
_v = torch.cat([_vp[3], _vp[1]])[:6].permute(1, 0, 2)
check_close(paged_attention(_q, _kp, _vp, [[3, 1]], [6])[0], F.scaled_dot_product_attention(_q[0][:, None], _k, _v)[:, 0],
            rtol=1e-10, atol=1e-12, name="one sequence, table [3, 1], 6 tokens vs SDPA on the gathered keys")
### BEGIN HIDDEN TESTS
for _seed, (_h, _hkv, _bs) in enumerate(((6, 2, 4), (4, 4, 3), (8, 2, 5), (3, 1, 1))):
    _g = torch.Generator().manual_seed(10 + _seed)
    _nb, _d = 24, 8
    _kp = torch.randn(_nb, _bs, _hkv, _d, generator=_g, dtype=torch.float64)
    _vp = torch.randn(_nb, _bs, _hkv, _d, generator=_g, dtype=torch.float64)
    _lens = [int(x) for x in torch.randint(1, 3 * _bs + 1, (3,), generator=_g)]
    _perm = torch.randperm(_nb, generator=_g).tolist()
    _tables, _at = [], 0
    for _n in _lens:
        _m = -(-_n // _bs)
        _tables.append(_perm[_at:_at + _m])
        _at += _m
    _q = torch.randn(3, _h, _d, generator=_g, dtype=torch.float64)
    _got = paged_attention(_q, _kp, _vp, _tables, _lens)
    check_property(tuple(_got.shape) == (3, _h, _d), f"output shape should be (3, {_h}, {_d}), got {tuple(_got.shape)}")
    for _b in range(3):
        _k = torch.cat([_kp[x] for x in _tables[_b]])[:_lens[_b]].transpose(0, 1)
        _v = torch.cat([_vp[x] for x in _tables[_b]])[:_lens[_b]].transpose(0, 1)
        _want = F.scaled_dot_product_attention(_q[_b][:, None], _k, _v, enable_gqa=True)[:, 0]
        check_close(_got[_b], _want, rtol=1e-9, atol=1e-12,
                    name=f"sequence {_b} ({_lens[_b]} tokens, blocks of {_bs}, {_h} heads on {_hkv} KV heads) vs SDPA")
### END HIDDEN TESTS

# %% markdown
# ## 4. How much memory pre-allocation wastes
#
# The vLLM paper measured that earlier systems, which reserve a contiguous cache of the maximum length per
# request, actually use only 20–38% of the KV memory they hold (Kwon et al. 2023, Fig. 2) — 60–80% is waste —
# while with paging the waste is under 4% (the last, partly filled block of each sequence).
#
# ### Exercise 4 (1 point)
# `kv_waste(lengths, block_size, max_len)` for requests of final lengths `lengths` (prompt + output tokens):
# return `(contiguous, paged)`, the fraction of reserved KV slots that hold no token when each request reserves
# `max_len` slots, and when it holds just enough whole blocks of `block_size` slots.

# %% solution id=kv_waste
def kv_waste(lengths, block_size, max_len):
    """(wasted fraction with max_len slots per request, wasted fraction with whole blocks)."""
    ### BEGIN SOLUTION
    lengths = np.asarray(lengths)
    used = lengths.sum()
    blocks = np.ceil(lengths / block_size) * block_size
    return float(1 - used / (len(lengths) * max_len)), float(1 - used / blocks.sum())
    ### END SOLUTION

# %% tests id=test_kv_waste points=1
_c, _p = kv_waste([1, 16, 17], 16, 64)
check_number(_c, 1 - 34 / 192, rtol=1e-12, name="contiguous waste of lengths [1, 16, 17], max_len 64")
check_number(_p, 1 - 34 / 64, rtol=1e-12, name="paged waste of lengths [1, 16, 17], blocks of 16 (4 blocks)")
### BEGIN HIDDEN TESTS
_rng = np.random.default_rng(3)
for _bs, _max in ((1, 50), (8, 100), (32, 4096)):
    _lens = [int(x) for x in _rng.integers(1, _max + 1, 37)]
    _c, _p = kv_waste(_lens, _bs, _max)
    _slots = sum(_bs * ((n + _bs - 1) // _bs) for n in _lens)
    check_number(_c, (37 * _max - sum(_lens)) / (37 * _max), rtol=1e-12, name=f"contiguous waste (max_len {_max})")
    check_number(_p, (_slots - sum(_lens)) / _slots, rtol=1e-12, atol=1e-15, name=f"paged waste (blocks of {_bs})")
### END HIDDEN TESTS

# %% markdown
# **Measured on a stated distribution.** Final lengths: prompts and outputs drawn from log-normal distributions
# with the means the vLLM paper reports for ShareGPT (161 input and 338 output tokens, §6.1), a log-space spread
# of 1.0, clipped to a 2048-token maximum (`lab.length_trace`). Paged waste is also *measured* with your
# `BlockManager`: every request is allocated, and the blocks it holds are counted.

# %%
try:
    prompt_len, output_len = lab.length_trace(2000, seed=0)
    lengths = (prompt_len + output_len).tolist()
    for bs in (8, 16, 32):
        contiguous, paged = kv_waste(lengths, bs, 2048)
        some = lengths[:100]  # the first 100 requests, allocated in your BlockManager
        bm = BlockManager(sum(-(-n // bs) for n in some) + 1, bs)
        for i, n in enumerate(some):
            bm.add_sequence(i, np.random.default_rng(i).integers(0, 10**6, n).tolist())
        held = (len(bm.ref_count) - bm.num_free()) * bs
        print(f"blocks of {bs:2d}: contiguous waste {contiguous:6.1%}, paged waste {paged:5.2%} "
              f"(first 100 requests allocated in your BlockManager: {1 - sum(some) / held:5.2%})")
    print(f"mean length {np.mean(lengths):.0f} tokens, max {max(lengths)}")
except NotImplementedError:
    print("finish Exercises 2 and 4 first")

# %% markdown
# ## 5. Static vs continuous batching
#
# Decoding is memory-bound: one step for 32 sequences costs little more than one step for one, because the
# weights are read once either way. Batching is how an engine gets throughput — but *how* it batches matters.
# **Static** (request-level) batching forms a batch, runs it until its longest request finishes, and only then
# takes new requests: short requests wait as padding. **Continuous** (iteration-level) batching, introduced by
# Orca (Yu et al., OSDI 2022) and used by vLLM and SGLang, revisits the batch at every step: finished requests leave
# and waiting ones join immediately.
#
# We simulate both with a cost model: one engine iteration takes
# `step_time(n_decode, n_prefill_tokens)` seconds (`n_decode` sequences each producing one token, plus the prompt
# tokens of the requests being prefilled). A request is `(arrival, prompt_len, output_len)`; its prefill iteration
# produces its first output token, and each later iteration one more.
#
# ### Exercise 5 (3 points)
# Return the finish time of every request (in the order given; the list is sorted by arrival).
# - `static_batching(requests, max_batch, step_time)`: when the engine is idle, it takes the waiting requests
#   (arrival ≤ now), first come first served, up to `max_batch`; if none has arrived it waits for the next one
#   (and takes all that have arrived by then, up to `max_batch`). The batch's first iteration prefills them all,
#   `step_time(0, sum of their prompt lengths)`; then it runs decode iterations costing `step_time(len(batch), 0)`
#   — finished requests stay in the batch as padding — until the longest output is done. A request finishes at
#   the end of the iteration that produced its last token.
# - `continuous_batching(requests, max_batch, step_time)`: at the start of every iteration, waiting requests
#   join (first come first served) while fewer than `max_batch` are running; if nothing is running and nothing
#   has arrived, the engine waits for the next arrival. The iteration costs
#   `step_time(number already running, sum of the prompt lengths of those joining)`; every running request
#   produces one token, those joining their first; requests that are done leave.

# %% solution id=batching
def static_batching(requests, max_batch, step_time):
    """Finish times under request-level batching."""
    ### BEGIN SOLUTION
    finish = [None] * len(requests)
    now, i = 0.0, 0
    while i < len(requests):
        now = max(now, requests[i][0])
        batch = [j for j in range(i, len(requests)) if requests[j][0] <= now][:max_batch]
        i += len(batch)
        now += step_time(0, sum(requests[j][1] for j in batch))
        longest = max(requests[j][2] for j in batch)
        for token in range(1, longest + 1):
            if token > 1:
                now += step_time(len(batch), 0)
            for j in batch:
                if requests[j][2] == token:
                    finish[j] = now
    return finish
    ### END SOLUTION


def continuous_batching(requests, max_batch, step_time):
    """Finish times under iteration-level batching."""
    ### BEGIN SOLUTION
    finish = [None] * len(requests)
    left = {}
    now, i = 0.0, 0
    while i < len(requests) or left:
        if not left and requests[i][0] > now:
            now = requests[i][0]
        joining = []
        while i < len(requests) and requests[i][0] <= now and len(left) + len(joining) < max_batch:
            joining.append(i)
            i += 1
        now += step_time(len(left), sum(requests[j][1] for j in joining))
        for j in joining:
            left[j] = requests[j][2]
        for j in list(left):
            left[j] -= 1
            if left[j] == 0:
                finish[j] = now
                del left[j]
    return finish
    ### END SOLUTION

# %% tests id=test_batching points=3
_cost = lambda n, t: 1.0 + n + 0.1 * t  # noqa: E731
_reqs = [(0.0, 10, 3), (0.0, 10, 1), (0.5, 20, 2)]
check_close(static_batching(_reqs, 2, _cost), [9.0, 3.0, 14.0], rtol=1e-12,
            name="static batching of 3 requests, batch 2 (the third waits for the first batch to end)")
check_close(continuous_batching(_reqs, 2, _cost), [10.0, 3.0, 10.0], rtol=1e-12,
            name="continuous batching of the same requests (the third joins when the second leaves)")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w09_inference as _ref

for _seed, (_n, _rate, _mb) in enumerate(((40, 5.0, 4), (60, 200.0, 8), (25, 0.5, 3), (50, 30.0, 1))):
    _trace = lab.arrival_trace(_n, _rate, _seed, prompt_mean=20, output_mean=15, max_len=120)
    _cost = lab.StepCost(0.01 + 0.001 * _seed, 0.002, 0.0001)
    check_close(static_batching(_trace, _mb, _cost), _ref.static_batching(_trace, _mb, _cost), rtol=1e-12,
                name=f"static batching finish times (trace {_seed}: {_n} requests at {_rate}/s, batch {_mb})")
    check_close(continuous_batching(_trace, _mb, _cost), _ref.continuous_batching(_trace, _mb, _cost), rtol=1e-12,
                name=f"continuous batching finish times (trace {_seed}: {_n} requests at {_rate}/s, batch {_mb})")
_same = [(0.0, 5, 1), (0.0, 5, 1), (3.0, 5, 2)]
check_close(continuous_batching(_same, 1, _cost), _ref.continuous_batching(_same, 1, _cost), rtol=1e-12,
            name="continuous batching with max_batch 1 and an idle gap")
### END HIDDEN TESTS

# %% markdown
# **Measured.** The cost model is calibrated on the tiny LM on this machine (decode steps of 1–32 sequences and
# prefills of 16–128 tokens, fitted by least squares); the trace is 300 requests with Poisson arrivals at a rate
# that keeps the engine busy, and the ShareGPT-like lengths of Section 4 (`lab.arrival_trace`). The target:
# continuous batching at least twice the throughput of static batching on this trace.

# %%
try:
    cost = lab.calibrate_step_cost(model, repeat=2 if sc.grading() else 3)
    print(f"step_time(n, t) = {cost.fixed * 1e3:.2f} ms + {cost.per_seq * 1e3:.3f} ms × n "
          f"+ {cost.per_prefill_token * 1e3:.4f} ms × t   (fitted on this machine)")
    max_batch = 32
    # arrivals at 1.5x the rate a full continuous batch can sustain: the engine is always busy
    capacity = max_batch / (338 * cost(max_batch, 0))
    rate = 1.5 * capacity
    trace = lab.arrival_trace(300, rate=rate, seed=0)
    print(f"trace: 300 requests, Poisson arrivals at {rate:.2f}/s, prompt mean 161, output mean 338 (log-normal)")
    results = {}
    for name, fn in (("static", static_batching), ("continuous", continuous_batching)):
        results[name] = lab.serving_metrics(trace, fn(trace, max_batch, cost))
        m = results[name]
        print(f"{name:10s}: {m['throughput']:8.1f} tokens/s   p50 latency {m['p50']:8.2f} s   p99 {m['p99']:8.2f} s")
    ratio = results["continuous"]["throughput"] / results["static"]["throughput"]
    print(f"continuous / static throughput: {ratio:.2f}x (target ≥ 2x: {'met' if ratio >= 2 else 'NOT met'})")
except NotImplementedError:
    print("finish Exercise 5 first")

# %% markdown
# Continuous batching wins twice: no slot idles behind the longest request of a batch, and a new request starts
# at the next iteration instead of waiting for a whole batch to drain (the p50 latency). The same simulation over
# three seeds and three arrival rates is in `benchmarks/inference_tiny_cpu.md` (2-vCPU AMD EPYC, shared,
# 2026-11-30): 2.0× at half the saturating rate, 3.3–3.7× at and above it. Real engines add what
# this model leaves out: a token budget per iteration (chunked prefill), preemption when the KV blocks run out
# (the block manager of Section 2 decides it), and priorities.
#
# ## 6. Prefix caching with a radix tree
#
# A paged engine shares whole blocks with equal hashes (Section 2). SGLang's **RadixAttention** (Zheng et al.,
# *SGLang: Efficient Execution of Structured Language Model Programs*, NeurIPS 2024) keeps every served prefix in
# a **radix tree** over tokens, matches a new prompt against it token by token, and evicts the least recently
# used leaves when memory runs short. `lab.RadixCache` is a small one; here is its hit rate (the fraction of
# prompt tokens whose KV cache is found) on two workloads — a multi-turn chat, where each turn resends the
# conversation, and few-shot prompts sharing a task's examples — as the cache shrinks.

# %%
chats = lab.multi_turn_workload(n_users=8, turns=5, seed=0)
shots = lab.few_shot_workload(200, seed=0)
for name, prompts in (("multi-turn (8 users, 5 turns)", chats), ("few-shot (3 tasks, 5 shots)", shots)):
    total = sum(len(p) for p in prompts)
    rates = {cap: lab.prefix_hit_rate(prompts, cap) for cap in (500, 2000, 8000, 10**6)}
    print(f"{name:30s} {total:6d} prompt tokens; hit rate by cache size: "
          + ", ".join(f"{c if c < 10**6 else '∞'}: {r:.0%}" for c, r in rates.items()))

# %% markdown
# ## 7. Speculative sampling
#
# A decode step of a large model is bound by reading its weights; checking several tokens in one forward pass
# costs about the same as generating one. **Speculative sampling** (Leviathan, Kalman & Matias, ICML 2023; Chen
# et al., 2023) lets a cheap draft model propose $\gamma$ tokens $x_1..x_\gamma$ with probabilities
# $q_i(\cdot)$; one forward pass of the target gives $p_i(\cdot)$ at those positions and $p_{\gamma+1}$ after
# them. Then, for $i = 1..\gamma$:
# - accept $x_i$ with probability $\min\!\left(1, \frac{p_i(x_i)}{q_i(x_i)}\right)$;
# - at the first rejection, emit a token drawn from the **residual**
#   $\mathrm{norm}(\max(0, p_i - q_i))$ and stop;
# - if all $\gamma$ are accepted, emit a **bonus** token drawn from $p_{\gamma+1}$.
#
# The emitted tokens are distributed exactly as if sampled from the target, one at a time (Leviathan et al.,
# Appendix A.1; Chen et al., Theorem 1):
# $q(x)\min(1, p(x)/q(x)) + (1-\beta)\,\mathrm{norm}(\max(0, p-q))(x) = p(x)$, with
# $\beta = \sum_x \min(p(x), q(x))$ the probability that a draft token is accepted (Leviathan et al.,
# Definition 3.1 and Theorem 3.5).
#
# ### Exercise 6 (4 points)
# - `speculative_step(p, q, draft, u, sample)`: `p` is `(gamma + 1, vocab)`, `q` is `(gamma, vocab)` (rows are
#   probability vectors), `draft` holds the `gamma` draft token ids, `u` holds `gamma` uniform numbers in
#   $[0, 1)$: accept `draft[i]` when `u[i]` $< \min(1, p_i/q_i)$. Draw every emitted token that is not a draft
#   token with `sample(probs)`, which returns a token id drawn from the probability vector `probs`. Return the
#   list of emitted token ids (1 to `gamma + 1` of them).
# - `expected_acceptance(p, q)`: $\beta = \mathbb{E}_{x\sim q}\min(1, p(x)/q(x))$ for one position's vectors.
#
# The hidden tests compute the distribution of what your function emits **exactly**: they enumerate the draft
# tokens, find the set of `u` on which you accept, and read the distribution you pass to `sample`.

# %% solution id=speculative
def speculative_step(p, q, draft, u, sample):
    """Verify gamma draft tokens against the target; returns the emitted token ids."""
    ### BEGIN SOLUTION
    emitted = []
    for i, token in enumerate(int(t) for t in draft):
        ratio = p[i, token] / q[i, token]
        if u[i] < min(1.0, float(ratio)):
            emitted.append(token)
        else:
            residual = torch.clamp(p[i] - q[i], min=0.0)
            emitted.append(int(sample(residual / residual.sum())))
            return emitted
    emitted.append(int(sample(p[len(emitted)])))
    return emitted
    ### END SOLUTION


def expected_acceptance(p, q):
    """beta = sum over x of q(x) min(1, p(x)/q(x))."""
    ### BEGIN SOLUTION
    support = q > 0
    return float((q[support] * torch.clamp(p[support] / q[support], max=1.0)).sum())
    ### END SOLUTION

# %% tests id=test_speculative points=4
_gen = torch.Generator().manual_seed(0)


def _multinomial(probs):
    return int(torch.multinomial(torch.as_tensor(probs, dtype=torch.float64), 1, generator=_gen))


_p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=torch.float64)
_out = speculative_step(_p, _p[:2].clone(), torch.tensor([0, 1]), torch.tensor([0.99, 0.99]), _multinomial)
check_property(len(_out) == 3 and _out[:2] == [0, 1],
               f"with q = p every draft token is accepted and a bonus token follows: expected [0, 1, x], got {_out}")
_q = torch.tensor([[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], dtype=torch.float64)
_seen = []
_out = speculative_step(_p, _q, torch.tensor([2, 0]), torch.tensor([0.3, 0.0]),
                        lambda probs: _seen.append(torch.as_tensor(probs)) or 1)
check_property(_out == [1] and len(_seen) == 1,
               f"p/q = 0.25 for draft token 2 and u = 0.3: reject at once and emit one resampled token (got {_out})")
check_close(_seen[0] / _seen[0].sum(), [0.4 / 0.6, 0.2 / 0.6, 0.0], rtol=1e-9, atol=1e-12,
            name="the resampling distribution after a rejection (the normalised residual max(0, p - q))")
check_number(expected_acceptance(_p[0], _q[0]), 0.1 + 0.1 + 0.2, rtol=1e-9, name="expected_acceptance(p, q)")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w09_inference as _ref

for _gamma, _V, _seed in ((1, 4, 0), (2, 4, 1), (3, 3, 2), (1, 6, 3)):
    _g = torch.Generator().manual_seed(_seed)
    _pp = torch.rand(_gamma + 1, _V, generator=_g, dtype=torch.float64) ** 2
    _qq = torch.rand(_gamma, _V, generator=_g, dtype=torch.float64) ** 2
    _pp[0, 0], _qq[0, 1] = 0.0, 0.0  # a token the target never emits, one the draft never proposes
    _pp, _qq = _pp / _pp.sum(-1, keepdim=True), _qq / _qq.sum(-1, keepdim=True)
    try:
        _joint = _ref.outcome_distribution(speculative_step, _pp, _qq)
    except AssertionError as _e:
        check_property(False, f"gamma={_gamma}: {_e}")
    _want = _pp[0]
    for _i in range(1, _gamma + 1):
        _want = _want[..., None] * _pp[_i]
    check_close(_joint, _want, rtol=1e-9, atol=1e-12,
                name=f"exact distribution of the emitted tokens vs the target's (gamma={_gamma}, vocabulary {_V})")
    for _i in range(_gamma):
        check_number(expected_acceptance(_pp[_i], _qq[_i]), float(torch.minimum(_pp[_i], _qq[_i]).sum()),
                     rtol=1e-9, name=f"expected_acceptance (row {_i}, gamma={_gamma})")
### END HIDDEN TESTS

# %% markdown
# **A demonstration, not a grade:** a chi-square test of 100 000 steps of your function (γ = 1, a 5-token
# vocabulary) against the target's distribution of the first emitted token, and the acceptance rate against β.
# (It takes a few seconds; it is skipped while grading.)

# %%
if sc.grading():
    print("skipped while grading")
else:
    try:
        from scipy.stats import chisquare

        gen = torch.Generator().manual_seed(0)
        p_demo = torch.tensor([[0.40, 0.25, 0.15, 0.15, 0.05], [0.2] * 5], dtype=torch.float64)
        q_demo = torch.tensor([[0.10, 0.30, 0.30, 0.10, 0.20]], dtype=torch.float64)
        n = 100_000
        drafts = torch.multinomial(q_demo[0], n, replacement=True, generator=gen)
        us = torch.rand(n, generator=gen, dtype=torch.float64)
        counts, accepted = np.zeros(5), 0
        for d, uu in zip(drafts.tolist(), us.tolist(), strict=True):
            out = speculative_step(p_demo, q_demo, [d], [uu], lambda pr: int(torch.multinomial(pr, 1, generator=gen)))
            counts[out[0]] += 1
            accepted += len(out) == 2
        stat, pval = chisquare(counts, n * p_demo[0].numpy())
        print(f"first tokens: {counts.astype(int)}; expected {np.round(n * p_demo[0].numpy()).astype(int)}; "
              f"chi-square {stat:.2f}, p-value {pval:.3f}")
        print(f"acceptance rate {accepted / n:.4f} vs beta = {expected_acceptance(p_demo[0], q_demo[0]):.4f}")
    except NotImplementedError:
        print("finish Exercise 7 first")

# %% markdown
# **Tokens per target call.** If each draft token is accepted with probability $\alpha$ independently, one
# verification emits on average $\frac{1-\alpha^{\gamma+1}}{1-\alpha}$ tokens (Leviathan et al., Eq. 1). The
# cost side: each round also runs the draft $\gamma$ times; with a draft that costs a fraction $c$ of the target,
# the expected speed-up is $\frac{1-\alpha^{\gamma+1}}{(1-\alpha)(\gamma c+1)}$ (their Theorem 3.8), which picks
# the best $\gamma$:

# %%
for alpha in (0.6, 0.8, 0.9):
    row = []
    for gamma in (1, 2, 3, 4, 6, 8):
        tokens = (1 - alpha ** (gamma + 1)) / (1 - alpha)
        row.append(f"γ={gamma}: {tokens:4.2f} tok, ×{tokens / (gamma * 0.05 + 1):4.2f}")
    print(f"α={alpha}: " + " | ".join(row) + "   (draft cost c = 0.05)")

# %% markdown
# ## Explore: speculative decoding on the tiny LM, and Medusa
#
# `sparkcourse.speculative` runs the whole loop: a **draft model** (here *self-speculative*: the first layers of
# the tiny LM with its embeddings and LM head, `make_draft`) proposes γ tokens, the target scores them in one
# forward pass, and **your** `speculative_step` decides what to keep (`draft_generate(..., step=...)`; its
# contract draws random numbers from a generator, so a small adapter supplies your `u` and `sample`). Measured
# over 12 test prompts of the course's instruction data: the acceptance rate α and the tokens per target call,
# against $(1-\alpha^{\gamma+1})/(1-\alpha)$ (tokens per call counts what each verification yields before the
# answer is cut at its end-of-sequence token: what the formula predicts; the prefill is the first verification). Then **Medusa** (Cai et al., ICML 2024): extra heads on the
# frozen model's last hidden state guess tokens $t+2, t+3, \dots$; their top candidates form a tree that the model
# verifies in one pass with a tree attention mask. The heads are trained here on the model's own answers
# (self-distillation) for 200 steps. About half a minute on a CPU; skipped while grading.

# %%
import json


def as_engine_step(step_fn):
    """Adapt ``speculative_step(p, q, draft, u, sample)`` to ``draft_generate``'s ``step(p, q, draft, generator)``."""
    def engine_step(p, q, draft_tokens, generator):
        u = torch.rand(len(draft_tokens), generator=generator, device=p.device, dtype=torch.float64)
        return step_fn(p.double(), q.double(), draft_tokens, u,
                       lambda probs: int(torch.multinomial(torch.as_tensor(probs).float(), 1, generator=generator)))
    return engine_step


def instruct_prompts(split, n):
    """The first ``n`` prompts of the course's instruction data, in the tiny LM's chat template, as token ids."""
    from sparkcourse.models import TINY_LM_PATH, chat_prompt

    path = TINY_LM_PATH.parent / "instruct" / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return [tokenizer(chat_prompt(tokenizer, r["prompt"]), return_tensors="pt", add_special_tokens=False).input_ids
            for r in rows]


try:
    from sparkcourse import speculative as spec
except ImportError:
    spec = None
if sc.grading() or spec is None:
    print("skipped while grading" if sc.grading() else "sparkcourse.speculative is not available: skipped")
else:
    import transformers

    transformers.logging.set_verbosity_error()  # assisted generation's notices about its own generation config
    try:
        tests = instruct_prompts("test", 12)
        draft_lm = spec.make_draft(model, 2)  # layers 0-1 of 4
        print(" γ   α (measured)  tokens/target call  (1-α^(γ+1))/(1-α)")
        for gamma in (1, 2, 3, 4):
            acc = tested = produced = calls = 0
            for j, prompt in enumerate(tests):
                _, st = spec.draft_generate(model, draft_lm, prompt, gamma, 32, step=as_engine_step(speculative_step),
                                            greedy=False, generator=torch.Generator().manual_seed(j))
                acc, tested = acc + st.accepted, tested + st.accepted + st.rejections
                produced, calls = produced + st.produced, calls + st.target_calls
            alpha = acc / tested
            print(f"{gamma:2d}   {alpha:10.3f}   {produced / calls:14.2f}   {spec.expected_tokens_per_call(alpha, gamma):14.2f}")
        same = produced = calls = 0
        for prompt in tests:
            ids, st = spec.draft_generate(model, draft_lm, prompt, 3, 32)
            with torch.no_grad():
                assisted = model.generate(prompt, assistant_model=draft_lm, max_new_tokens=32, do_sample=False)
            same += torch.equal(ids, assisted)
            produced, calls = produced + st.produced, calls + st.target_calls
        print(f"greedy, γ=3: {produced / calls:.2f} tokens per target call; identical to transformers' assisted "
              f"generation on {same} of {len(tests)} prompts")
        with torch.no_grad():
            corpus = [model.generate(p, max_new_tokens=32, do_sample=False)[0] for p in instruct_prompts("train", 80)]
        heads = spec.train_medusa_heads(model, corpus, n_heads=3, steps=200)
        for greedy in (True, False):
            produced = passes = 0
            for prompt in tests:
                _, ms = spec.medusa_generate(model, heads, prompt, 32, greedy=greedy)
                produced, passes = produced + ms.produced, passes + ms.forward_passes
            print(f"Medusa, 3 heads, a tree of {ms.tree_size} tokens, "
                  f"{'greedy verification' if greedy else 'typical acceptance'}: "
                  f"{produced / passes:.2f} tokens per forward pass")
    except NotImplementedError:
        print("finish Exercises 1 and 6 first")

# %% markdown
# Tokens per call are not speed. `benchmarks/speculative_tiny_cpu.md` (2-vCPU AMD EPYC, shared, 2026-11-30) also
# times the runs: on this tiny model on a CPU, speculative decoding measured 0.5–0.9× the speed of the plain greedy
# loop — a draft made of the target's own layers is not cheap next to a target whose step is mostly fixed
# overhead. The speed-up needs what a Spark has when it serves a large model: a decode step bound by reading the
# weights, which verifying γ + 1 tokens at once barely lengthens.

# %% markdown
# ## On your Spark
#
# **The same code at a larger size.** In the spark profile with a GPU, this cell builds a Llama with random
# weights (1024 wide, 16 layers, 8 query heads on 2 KV heads; what is measured is time, which the weights do not
# change), and times your `forward_cached`/`greedy_generate` against decoding without a cache and against
# transformers' `generate`, on the GPU (synchronised); it fits the batching cost model on the GPU and reruns the
# simulation with it. Then the same for **Qwen2.5-1.5B-Instruct** in bf16 (downloaded, or with
# `SPARKCOURSE_STANDIN=1` built from its shipped config with random weights — labelled): your KV cache runs a
# real architecture unchanged. About two minutes.

# %%
if not FULL:
    print("needs the spark profile and a CUDA GPU: skipped here")
else:
    from sparkcourse.models import random_llama

    big = random_llama(0, vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                       num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=8192,
                       tie_word_embeddings=False).to("cuda", torch.bfloat16)
    try:
        ids = torch.randint(3, 32000, (1, 512), device="cuda")
        with torch.no_grad():
            same = torch.equal(greedy_generate(big, ids, 16), big.generate(ids, max_new_tokens=16, min_new_tokens=16,
                                                                            do_sample=False)[:, 512:])
        print(f"your greedy_generate on the GPU, bf16, 16 tokens: {'identical to' if same else 'DIFFERS from'} "
              "transformers' generate (bf16 near-ties can flip a token)")
        for n in (32, 128):
            mine = lab.time_per_token(greedy_generate, big, ids, [n])[0]
            hf = lab.time_per_token(lambda m, i, k: m.generate(i, max_new_tokens=k, min_new_tokens=k,
                                                                do_sample=False), big, ids, [n])[0]
            nocache = lab.time_per_token(lab.greedy_without_cache, big, ids, [min(n, 32)])[0]
            print(f"{n:4d} tokens after a 512-token prompt: yours {mine * 1e3:6.2f} ms/token, transformers "
                  f"{hf * 1e3:6.2f}, no cache {nocache * 1e3:6.2f}")
        cost_gpu = lab.calibrate_step_cost(big, batches=(1, 8, 32, 64), prompts=(128, 512, 1024), context=256)
        print(f"GPU step_time(n, t) = {cost_gpu.fixed * 1e3:.2f} ms + {cost_gpu.per_seq * 1e3:.4f} ms × n + "
              f"{cost_gpu.per_prefill_token * 1e3:.5f} ms × t")
        trace = lab.arrival_trace(300, rate=1.5 * 64 / (338 * cost_gpu(64, 0)), seed=0)
        for name, fn in (("static", static_batching), ("continuous", continuous_batching)):
            m = lab.serving_metrics(trace, fn(trace, 64, cost_gpu))
            print(f"{name:10s} (batch 64, GPU cost model): {m['throughput']:9.1f} tokens/s, p50 {m['p50']:.2f} s, "
                  f"p99 {m['p99']:.2f} s")
    except NotImplementedError:
        print("finish Exercises 1 and 5 first")
    finally:
        del big
        torch.cuda.empty_cache()
    from sparkcourse import hub
    from sparkcourse.models import chat_prompt

    try:  # a real model (or, with SPARKCOURSE_STANDIN=1, its architecture with random weights)
        qwen, qwen_tok, qwen_label = hub.causal_lm("Qwen/Qwen2.5-1.5B-Instruct", dtype=torch.bfloat16, device="cuda")
    except hub.Unavailable as exc:
        hub.report(exc)
    else:
        print(qwen_label)
        try:
            ids = qwen_tok(chat_prompt(qwen_tok, "Explain in one paragraph what a KV cache is."), return_tensors="pt",
                           add_special_tokens=False).input_ids.to("cuda")
            mine = greedy_generate(qwen, ids, 64)
            with torch.no_grad():
                theirs = qwen.generate(ids, max_new_tokens=64, do_sample=False)[:, ids.shape[1]:]
            n_same = int((mine[:, :theirs.shape[1]] == theirs).cumprod(1).sum())
            print(f"your greedy_generate and transformers' agree on the first {n_same} of {theirs.shape[1]} tokens "
                  "(bf16: a near-tie can flip a token, and everything after it)")
            mine_t = lab.time_per_token(greedy_generate, qwen, ids, [64])[0]
            hf_t = lab.time_per_token(lambda m, i, k: m.generate(i, max_new_tokens=k, min_new_tokens=k,
                                                                  do_sample=False), qwen, ids, [64])[0]
            none_t = lab.time_per_token(lab.greedy_without_cache, qwen, ids, [32])[0]
            print(f"ms per generated token: yours {mine_t * 1e3:.2f}, transformers {hf_t * 1e3:.2f}, "
                  f"no cache {none_t * 1e3:.2f} (prompt {ids.shape[1]} tokens)")
        except NotImplementedError:
            print("finish Exercise 1 first")
        finally:
            del qwen
            torch.cuda.empty_cache()

# %% markdown
# **The engines NVIDIA documents for the Spark.** NVIDIA's DGX Spark playbooks
# (github.com/NVIDIA/dgx-spark-playbooks, read in November 2026; check them for current versions) give these
# commands; each engine implements what you wrote this week.
#
# - **vLLM** (paged KV blocks, continuous batching, prefix caching), in NVIDIA's container
#   (`nvidia/vllm/README.md`; its example tag is `26.05.post1-py3`):
#   ```bash
#   docker run -it --gpus all -p 8000:8000 nvcr.io/nvidia/vllm:${LATEST_VLLM_VERSION} vllm serve ${HF_MODEL_HANDLE}
#   ```
#   The share of memory vLLM takes for weights plus KV blocks is `--gpu-memory-utilization` (0.9 by default; the
#   playbook uses 0.8 for one model). Its start-up log reports the KV-cache size and the maximum concurrency.
# - **SGLang** (RadixAttention prefix cache), inside the `lmsysorg/sglang:latest-cu130` container
#   (`nvidia/sglang/README.md`):
#   ```bash
#   python3 -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V2-Lite --host 0.0.0.0 --port 30000 \
#     --trust-remote-code --tp 1 --attention-backend flashinfer --mem-fraction-static 0.75
#   ```
#   `--mem-fraction-static` is the fraction for weights and the KV pool.
# - **TensorRT-LLM** with **EAGLE-3** speculative decoding (`nvidia/speculative-decoding/README.md`):
#   `trtllm-serve openai/gpt-oss-120b --backend pytorch --tp_size 1 --max_batch_size 1
#   --extra_llm_api_options extra-llm-api-config.yml`, with `speculative_config: {decoding_type: Eagle,
#   max_draft_len: 5, speculative_model_dir: <the nvidia/gpt-oss-120b-Eagle3-long-context head>}` and
#   `kv_cache_config: {free_gpu_memory_fraction: 0.9}` in the YAML (the Draft-Target variant passes
#   `--kv_cache_free_gpu_memory_fraction 0.9`).
# - **llama.cpp** (`nvidia/llama-cpp/README.md`): `./bin/llama-server -hf unsloth/Qwen3.6-35B-A3B-MTP-GGUF:UD-Q4_K_XL
#   --host 0.0.0.0 --port 30000`, and with multi-token-prediction drafting `--spec-type draft-mtp
#   --spec-draft-n-max 3`.
#
# **What to measure** on each: single-request decode tokens/s (compare with the bandwidth bound of week 00:
# 273 GB/s divided by the bytes read per token); throughput and p50/p99 latency as concurrency grows (vLLM's
# `vllm bench serve`, SGLang's `sglang.bench_serving`); the prefix-cache hit rate the server reports on a
# multi-turn workload; and, with speculative decoding, the mean accepted length per step the server logs, against
# $(1-\alpha^{\gamma+1})/(1-\alpha)$.
#
# **The unified-memory pitfall.** On a Spark the GPU has no memory of its own: `cudaMemGetInfo` (and
# `torch.cuda.mem_get_info`) count memory the OS holds as page cache — for instance the model files just read from
# disk — as used, so an engine that sizes its KV pool as a fraction of "free" memory may start with far less than
# the machine could give, or refuse to start. Read `MemAvailable` in `/proc/meminfo` instead; NVIDIA's playbooks
# recommend flushing the page cache before starting a large model
# (`sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'`) and setting the engine's memory fraction explicitly
# (the flags above), leaving room for the OS and your other processes in the same 128 GB.

# %%
from sparkcourse import gpu

if gpu.detect().unified:
    print(f"unified memory: /proc/meminfo MemAvailable {gpu.meminfo_bytes('MemAvailable') / 1e9:.1f} GB; "
          f"CUDA reports {torch.cuda.mem_get_info()[0] / 1e9:.1f} GB free")
else:
    print("not a unified-memory machine: CUDA's free-memory figure can be trusted here")

# %% markdown
# ## Wrap-up
# - A KV cache turns $O(t)$ recomputation per token into a look-up; the new tokens' positions start at the cache
#   length.
# - Paging: block tables, reference counts, copy-on-write before writing a shared block, prefix sharing by hashes
#   chained over the prefix; waste drops from the unused reservation to the last partial block.
# - Continuous batching admits and retires requests every iteration; on the trace above it more than doubled
#   throughput.
# - Speculative sampling: accept with $\min(1, p/q)$, resample from $\mathrm{norm}(\max(0, p-q))$, bonus token
#   from $p_{\gamma+1}$; exact, and $(1-\alpha^{\gamma+1})/(1-\alpha)$ tokens per target call.
#
# **Read more:** Kwon et al., *Efficient Memory Management for Large Language Model Serving with PagedAttention*
# (SOSP 2023); Yu et al., *Orca: A Distributed Serving System for Transformer-Based Generative Models* (OSDI 2022);
# Zheng et al., *SGLang: Efficient Execution of Structured Language Model Programs* (NeurIPS 2024); Leviathan,
# Kalman & Matias, *Fast Inference from Transformers via Speculative Decoding* (ICML 2023); Chen et al.,
# *Accelerating Large Language Model Decoding with Speculative Sampling* (2023); Cai et al., *Medusa* (ICML 2024);
# Li et al., *EAGLE-3* (2025); vLLM's `vllm/v1/core/kv_cache_manager.py` and `block_pool.py`; nano-vllm's
# `nanovllm/engine/block_manager.py`.
