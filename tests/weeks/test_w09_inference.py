"""Week 09 (09-inference): the reference against independent oracles — transformers' ``generate`` and full
forward, torch SDPA, property tests of the block manager against a brute-force content model, hand-worked
schedules, exact enumeration of speculative sampling — and the lab's helpers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from sparkcourse.labs import w09_inference as lab
from sparkcourse.models import load_tiny_lm
from sparkcourse.reference import w09_inference as ref


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_tiny_lm(torch.float64)
    return model, tok


def test_lab_layers_reproduce_the_model(tiny):
    model, _ = tiny
    ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    h = lab.embed(model, ids)
    pos = torch.arange(9)
    for i in range(lab.num_layers(model)):
        q, k, v = lab.layer_qkv(model, i, h, pos)
        h = lab.layer_out(model, i, h, lab.attend(q, k, v))
    with torch.no_grad():
        torch.testing.assert_close(lab.logits(model, h), model(ids).logits, rtol=1e-10, atol=1e-10)


def test_reference_kv_cache_matches_generate_and_full_forward(tiny):
    model, tok = tiny
    ids = tok("The cat sat on the", return_tensors="pt").input_ids
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    assert want.shape[1] == 8  # no end-of-sequence token in these 8 (generate would stop there)
    assert torch.equal(ref.greedy_generate(model, ids, 8), want)
    assert torch.equal(lab.greedy_without_cache(model, ids, 8), want)
    cache = ref.KVCache(lab.num_layers(model))
    seq = torch.randint(3, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    got = torch.cat([ref.forward_cached(model, seq[:, :5], cache), ref.forward_cached(model, seq[:, 5:6], cache),
                     ref.forward_cached(model, seq[:, 6:], cache)], 1)
    with torch.no_grad():
        torch.testing.assert_close(got, model(seq).logits, rtol=1e-9, atol=1e-9)
    assert len(cache) == 11


def test_block_hashes_properties():
    a = [5, 6, 7, 8, 9, 10, 11]
    assert len(ref.block_hashes(a, 2)) == 3 and ref.block_hashes(a, 8) == []
    assert ref.block_hashes(a, 2) == ref.block_hashes(a[:6] + [99], 2)
    # the same block after a different prefix hashes differently
    assert ref.block_hashes([1, 2, 3, 4], 2)[1] != ref.block_hashes([0, 2, 3, 4], 2)[1]


def _check_manager(bm, seqs, pool, num_blocks):
    """Brute-force invariants: each live sequence reads back its own prefixes; ref counts = mappings."""
    counts = [0] * num_blocks
    for s, toks in seqs.items():
        table = bm.tables[s]
        assert len(table) == -(-len(toks) // bm.block_size)
        for b in table:
            counts[b] += 1
        for p in range(len(toks)):
            assert pool[(table[p // bm.block_size], p % bm.block_size)] == tuple(toks[:p + 1]), (s, p)
    assert [bm.ref_count[b] for b in range(num_blocks)] == counts
    assert bm.num_free() == sum(c == 0 for c in counts)


@pytest.mark.parametrize("seed", range(6))
def test_block_manager_random_workloads(seed):
    """Adds (with shared prefixes), forks, appends and frees: contents, ref counts and free blocks stay right,
    and the cached-prefix count equals a brute-force longest shared full-block prefix."""
    rng = random.Random(seed)
    nb, bs = 64, 4
    bm = ref.BlockManager(nb, bs)
    seqs, pool, nid = {}, {}, 0
    stems = [[rng.randrange(50) for _ in range(rng.randrange(1, 14))] for _ in range(3)]
    for _ in range(120):
        op = rng.random()
        if op < 0.25 and bm.num_free() > 8:
            toks = list(rng.choice(stems)) + [rng.randrange(50) for _ in range(rng.randrange(0, 6))]
            best = 0  # brute force: longest run of full blocks equal to a live sequence's prompt-filled blocks
            for other in seqs.values():
                k = 0
                while (k + 1) * bs <= min(len(toks), len(other)) and toks[:(k + 1) * bs] == other[:(k + 1) * bs]:
                    k += 1
                best = max(best, k)
            cached = bm.add_sequence(nid, toks)
            assert cached <= best * bs
            for p in range(cached, len(toks)):
                pool[(bm.tables[nid][p // bs], p % bs)] = tuple(toks[:p + 1])
            seqs[nid], nid = toks, nid + 1
        elif op < 0.4 and seqs and bm.num_free() > 8:
            parent = rng.choice(sorted(seqs))
            bm.fork(parent, nid)
            seqs[nid], nid = list(seqs[parent]), nid + 1
        elif op < 0.85 and seqs and bm.num_free() > 2:
            s = rng.choice(sorted(seqs))
            tok = rng.randrange(50)
            block, off, copy = bm.append_token(s, tok)
            if copy is not None:
                for o in range(bs):
                    if (copy[0], o) in pool:
                        pool[(copy[1], o)] = pool[(copy[0], o)]
            seqs[s].append(tok)
            pool[(block, off)] = tuple(seqs[s])
        elif seqs:
            s = rng.choice(sorted(seqs))
            bm.free(s)
            del seqs[s]
        _check_manager(bm, seqs, pool, nb)


def test_block_manager_hand_worked():
    bm = ref.BlockManager(8, 4)
    assert bm.add_sequence("a", [1, 2, 3, 4, 5, 6]) == 0
    assert bm.add_sequence("b", [1, 2, 3, 4, 9]) == 4  # first block shared
    assert bm.tables["a"][0] == bm.tables["b"][0] and bm.ref_count[bm.tables["a"][0]] == 2
    bm.fork("a", "c")
    last = bm.tables["a"][1]
    assert bm.ref_count[last] == 2
    block, off, copy = bm.append_token("c", 7)
    assert off == 2 and copy == (last, block) and block != last and bm.ref_count[last] == 1
    block2, off2, copy2 = bm.append_token("a", 8)
    assert (block2, off2, copy2) == (last, 2, None)
    bm.free("a")
    assert bm.ref_count[bm.tables["b"][0]] == 2  # still held by b and c
    bm.free("b")
    bm.free("c")
    assert bm.num_free() == 8 and all(r == 0 for r in bm.ref_count)
    with pytest.raises(MemoryError):
        tight = ref.BlockManager(2, 2)
        tight.add_sequence(0, [1, 2, 3, 4])
        tight.append_token(0, 5)


def test_paged_attention_equals_sdpa():
    g = torch.Generator().manual_seed(3)
    nb, bs, hkv, h, d = 20, 4, 2, 6, 8
    kp, vp = torch.randn(nb, bs, hkv, d, generator=g, dtype=torch.float64), \
        torch.randn(nb, bs, hkv, d, generator=g, dtype=torch.float64)
    tables, lens = [[7, 2, 11], [0], [19, 3, 5, 8, 1]], [10, 3, 17]
    q = torch.randn(3, h, d, generator=g, dtype=torch.float64)
    got = ref.paged_attention(q, kp, vp, tables, lens)
    for b, (t, n) in enumerate(zip(tables, lens, strict=True)):
        k = torch.cat([kp[x] for x in t])[:n].transpose(0, 1)  # (hkv, n, d)
        v = torch.cat([vp[x] for x in t])[:n].transpose(0, 1)
        want = torch.nn.functional.scaled_dot_product_attention(q[b][:, None], k, v, enable_gqa=True)[:, 0]
        torch.testing.assert_close(got[b], want, rtol=1e-10, atol=1e-12)


def test_kv_waste_hand_worked():
    c, p = ref.kv_waste([1, 16, 17], 16, 64)
    assert math.isclose(c, 1 - 34 / 192) and math.isclose(p, 1 - 34 / 64)
    prompt, output = lab.length_trace(4000, 0)
    c, p = ref.kv_waste(list(prompt + output), 16, 2048)
    assert 0.6 < c < 0.8 and p < 0.04  # the regime the vLLM paper reports


def test_batching_hand_worked():
    cost = lambda n, t: 1.0 + n + 0.1 * t  # noqa: E731
    reqs = [(0.0, 10, 3), (0.0, 10, 1), (0.5, 20, 2)]
    # static, batch 2: {0,1} prefill 3 -> t=3 (1 done); decode 3 -> t=6; decode -> t=9 (0 done); then {2}:
    # prefill 3 -> 12; decode 2 -> 14
    assert ref.static_batching(reqs, 2, cost) == [9.0, 3.0, 14.0]
    # continuous, batch 2: t=0 admit 0,1: 1+0+2=3 (1 done); t=3 admit 2: 1+1+2=4 -> 7 (0 has 2 tokens, 2 has 1);
    # 1+2=3 -> 10 (both done)
    assert ref.continuous_batching(reqs, 2, cost) == [10.0, 3.0, 10.0]


def test_continuous_beats_static_on_the_stated_trace():
    reqs = lab.arrival_trace(200, rate=50.0, seed=0, prompt_mean=161, output_mean=338)
    cost = lab.StepCost(0.02, 0.0005, 0.00002)
    s = lab.serving_metrics(reqs, ref.static_batching(reqs, 32, cost))
    c = lab.serving_metrics(reqs, ref.continuous_batching(reqs, 32, cost))
    assert c["throughput"] >= 2 * s["throughput"] and c["p50"] < s["p50"]


@pytest.mark.parametrize("gamma", [1, 2])
def test_speculative_step_output_distribution_is_exactly_the_target(gamma):
    g = torch.Generator().manual_seed(gamma)
    V = 4
    p = torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample((gamma + 1,))
    q = torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample((gamma,))
    p[0, 1], q[0, 2] = 0.0, 0.0  # zeros on both sides
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    del g
    want = p[0]
    for i in range(1, gamma + 1):
        want = want[..., None] * p[i]
    torch.testing.assert_close(ref.outcome_distribution(ref.speculative_step, p, q), want, rtol=1e-9, atol=1e-12)


def test_speculative_step_resampling_from_p_is_caught():
    def wrong(p, q, draft, u, sample):
        out = []
        for i, d in enumerate(draft.tolist()):
            if u[i] < min(1.0, float(p[i, d] / q[i, d])):
                out.append(d)
            else:
                return out + [sample(p[i])]
        return out + [sample(p[len(draft)])]

    torch.manual_seed(0)
    p = torch.distributions.Dirichlet(torch.ones(4, dtype=torch.float64)).sample((2,))
    q = torch.distributions.Dirichlet(torch.ones(4, dtype=torch.float64)).sample((1,))
    assert not torch.allclose(ref.outcome_distribution(wrong, p, q), p[0][:, None] * p[1], atol=1e-6)


def test_expected_acceptance_against_sampling():
    torch.manual_seed(1)
    p, q = torch.softmax(torch.randn(6, dtype=torch.float64), 0), torch.softmax(torch.randn(6, dtype=torch.float64), 0)
    x = torch.multinomial(q, 200_000, replacement=True)
    mc = torch.clamp(p[x] / q[x], max=1).mean()
    assert abs(ref.expected_acceptance(p, q) - float(mc)) < 5e-3
    assert math.isclose(ref.expected_acceptance(p, p), 1.0)


def test_radix_cache_hits_and_eviction():
    c = lab.RadixCache(capacity=10)
    assert c.match([1, 2, 3]) == 0
    c.insert([1, 2, 3, 4])
    assert c.match([1, 2, 3, 9]) == 3 and c.match([1, 2, 3, 4, 5]) == 4
    c.insert([1, 2, 7, 7])  # splits the edge after [1, 2]
    assert c.size == 6 and c.match([1, 2, 7]) == 3
    c.insert([5, 5, 5, 5, 5])  # 11 tokens > 10: the least recently used leaf ([3, 4]) goes
    assert c.match([1, 2, 3, 4]) == 2 and c.match([1, 2, 7, 7]) == 4
    few = lab.few_shot_workload(60, 0)
    assert lab.prefix_hit_rate(few, 10**6) > 0.8
    assert lab.prefix_hit_rate(lab.multi_turn_workload(4, 4, 0), 10**6) > 0.5


def test_length_trace_means():
    prompt, output = lab.length_trace(20000, 1)
    assert abs(prompt.mean() - 161) < 10 and abs(output.mean() - 338) < 20
    assert np.all(prompt + output <= 2048) and prompt.min() >= 1 and output.min() >= 1


def test_speculative_step_without_bonus_is_caught():
    def no_bonus(p, q, draft, u, sample):
        out = ref.speculative_step(p, q, draft, u, sample)
        return out[:len(draft)] if len(out) == len(draft) + 1 and out[-1] == 10**6 and all(
            u[i] * q[i, int(draft[i])] < p[i, int(draft[i])] for i in range(len(draft))) else out

    torch.manual_seed(2)
    p = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((2,))
    q = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((1,))
    with pytest.raises(AssertionError, match="bonus"):
        ref.outcome_distribution(no_bonus, p, q)


def test_serving_metrics_and_cost_model():
    reqs = [(0.0, 5, 4), (1.0, 5, 6)]
    m = lab.serving_metrics(reqs, [2.0, 5.0])
    assert m["throughput"] == 10 / 5.0 and m["makespan"] == 5.0
    assert m["p50"] == 3.0 and math.isclose(m["p99"], 2.0 + 0.99 * 2.0)
    from sparkcourse.models import random_llama

    cost = lab.calibrate_step_cost(random_llama(0), batches=(1, 4), prompts=(4, 16), context=8, repeat=1)
    assert min(cost.fixed, cost.per_seq, cost.per_prefill_token) > 0 and len(cost.samples) == 4
    assert cost(2, 10) == cost.fixed + 2 * cost.per_seq + 10 * cost.per_prefill_token
