"""sparkcourse.speculative: greedy draft-then-verify equals transformers' assisted generation and plain greedy
generation; KV caches roll back correctly; with a correct speculative-sampling step (written here, not shipped)
the output distribution is the target's; the expected-tokens formula against a simulation; Medusa greedy equals
greedy generation; typical acceptance at its extremes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from sparkcourse import speculative as sp
from sparkcourse.models import chat_prompt, load_tiny_lm, random_llama

PROMPTS = ["What is 23 + 45?", "Reverse: c u d a", "Uppercase: s p a r k", "How much memory does a DGX Spark have?"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on shared cores: one intra-op thread is ~10x faster than two under load (spinning threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tok = load_tiny_lm()
    ids = [tok(chat_prompt(tok, p), return_tensors="pt", add_special_tokens=False).input_ids for p in PROMPTS]
    return model, tok, ids


def greedy(model, ids, n, **kw):
    return model.generate(ids, max_new_tokens=n, do_sample=False, **kw)


@torch.no_grad()
def greedy_no_eos(model, ids, n):
    """Greedy decoding past the end-of-sequence token, the naive way: a full forward pass per token, no cache
    (generate's min_new_tokens would forbid EOS instead of running past it)."""
    seq = ids
    for _ in range(n):
        seq = torch.cat([seq, model(seq).logits[:, -1:].argmax(-1)], dim=1)
    return seq


# ---------------------------------------------------------------------------------------------------------------
# the step the notebook's students write: here only, never in sparkcourse/


def correct_step(p, q, draft, gen):
    """Speculative sampling (Leviathan et al. 2023, Algorithm 1)."""
    out = []
    for i, x in enumerate(draft.tolist()):
        if torch.rand((), generator=gen, device=p.device) < torch.clamp(p[i, x] / q[i, x], max=1.0):
            out.append(x)
            continue
        residual = torch.clamp(p[i] - q[i], min=0.0)
        out.append(int(torch.multinomial(residual / residual.sum(), 1, generator=gen)))
        return out
    out.append(int(torch.multinomial(p[-1], 1, generator=gen)))
    return out


def resample_from_p_step(p, q, draft, gen):
    """A classic mistake: on rejection, sample from p instead of the residual max(0, p - q)."""
    out = []
    for i, x in enumerate(draft.tolist()):
        if torch.rand((), generator=gen, device=p.device) < torch.clamp(p[i, x] / q[i, x], max=1.0):
            out.append(x)
            continue
        out.append(int(torch.multinomial(p[i], 1, generator=gen)))
        return out
    out.append(int(torch.multinomial(p[-1], 1, generator=gen)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# greedy: token-identical to transformers


def test_make_draft_shares_weights_and_runs(tiny):
    model, _, ids = tiny
    d = sp.make_draft(model, 2)
    assert d.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    assert d.model.layers[1] is model.model.layers[1] and d.lm_head is model.lm_head
    assert d.model.embed_tokens is model.model.embed_tokens
    skip = sp.make_draft(model, (0, 2, 3))
    assert skip.model.layers[1].self_attn.layer_idx == 1 and model.model.layers[2].self_attn.layer_idx == 2
    assert skip.model.layers[1].self_attn.q_proj.weight is model.model.layers[2].self_attn.q_proj.weight
    full = sp.make_draft(model, 4)
    with torch.no_grad():
        assert torch.equal(full(ids[0]).logits, model(ids[0]).logits)
    with pytest.raises(ValueError):
        sp.make_draft(model, 5)
    with pytest.raises(ValueError):
        sp.make_draft(model, (2, 1))


@pytest.mark.parametrize("layers", [1, (0, 2, 3)])
def test_greedy_equals_assisted_generation_and_generate(tiny, layers):
    model, _, ids = tiny
    draft = sp.make_draft(model, layers)
    for i, prompt in enumerate(ids):
        ref = greedy(model, prompt, 16)
        assisted = greedy(model, prompt, 16, assistant_model=draft)
        assert torch.equal(assisted, ref), PROMPTS[i]
        for gamma in (1, 4):
            out, stats = sp.draft_generate(model, draft, prompt, gamma, 16)
            assert torch.equal(out, ref), (PROMPTS[i], gamma)
            assert stats.new_tokens == ref.shape[1] - prompt.shape[1]


def test_greedy_long_runs_with_many_rejections():
    """Past the end of turn, on a random Llama with a poor draft: rejections in almost every call, and the output
    still equals greedy generation (a cache not rolled back would shift every later position)."""
    target = random_llama(3, vocab_size=64, hidden_size=32, num_hidden_layers=3, initializer_range=0.2)
    draft = random_llama(4, vocab_size=64, hidden_size=32, num_hidden_layers=1, initializer_range=0.2)
    prompt = torch.tensor([[5, 9, 17, 33, 2, 40]])
    ref = greedy_no_eos(target, prompt, 24)
    # transformers as the oracle too: EOS (id 2) is never the argmax in this run, so min_new_tokens changes nothing
    assert torch.equal(greedy(target, prompt, 24, assistant_model=draft, min_new_tokens=24), ref)
    for gamma in (1, 4):
        out, stats = sp.draft_generate(target, draft, prompt, gamma, 24, stop_at_eos=False)
        assert torch.equal(out, ref), gamma
        assert stats.rejections >= stats.target_calls // 2, "the test needs a poor draft"
        assert 0.0 <= stats.alpha < 0.7


def test_greedy_stops_at_eos_and_max_new_tokens(tiny):
    model, tok, ids = tiny
    draft = sp.make_draft(model, 3)
    out, stats = sp.draft_generate(model, draft, ids[1], 4, 50)
    assert out[0, -1].item() == tok.convert_tokens_to_ids("<|end|>")
    out, stats = sp.draft_generate(model, draft, ids[1], 4, 2)
    assert out.shape[1] == ids[1].shape[1] + 2 and stats.new_tokens == 2
    out, _ = sp.draft_generate(model, draft, ids[1][0].tolist(), 4, 5, stop_at_eos=False)  # a list works too
    assert out.shape[1] == ids[1].shape[1] + 5


# ---------------------------------------------------------------------------------------------------------------
# KV caches


def test_crop_cache_equals_a_fresh_forward(tiny):
    model, _, ids = tiny
    prompt = ids[0]
    junk = torch.tensor([[50, 60, 70]])
    cont = torch.tensor([[80, 90]])
    with torch.no_grad():
        cache = DynamicCache()
        model(prompt, past_key_values=cache, use_cache=True)
        model(junk, past_key_values=cache, use_cache=True)
        assert sp.cache_length(cache) == prompt.shape[1] + 3
        sp.crop_cache(cache, prompt.shape[1])
        assert sp.cache_length(cache) == prompt.shape[1]
        got = model(cont, past_key_values=cache, use_cache=True).logits[0]
        want = model(torch.cat([prompt, cont], 1)).logits[0, -2:]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_tree_mask_and_select_cache_equal_a_fresh_forward(tiny):
    """A tree [r, a, b, c] where a, b are children of r and c a child of b: node c's logits equal a plain causal
    forward of prefix + r + b + c, and keeping path (r, b, c) in the cache continues like that sequence."""
    model, _, ids = tiny
    prefix = ids[2]
    r, a, b, c, nxt = 30, 40, 41, 42, 43
    parents = [-1, 0, 0, 2]
    n0 = prefix.shape[1]
    with torch.no_grad():
        cache = DynamicCache()
        model(prefix, past_key_values=cache, use_cache=True)
        mask = sp.tree_attention_mask(parents, n0, torch.float32, prefix.device)
        assert mask.shape == (1, 1, 4, n0 + 4)
        out = model(torch.tensor([[r, a, b, c]]), past_key_values=cache, use_cache=True, attention_mask=mask,
                    position_ids=torch.tensor([[n0, n0 + 1, n0 + 1, n0 + 2]])).logits[0]
        plain = model(torch.cat([prefix, torch.tensor([[r, b, c]])], 1)).logits[0, -3:]
        torch.testing.assert_close(out[[0, 2, 3]], plain, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1], model(torch.cat([prefix, torch.tensor([[r, a]])], 1)).logits[0, -1],
                                   rtol=1e-4, atol=1e-5)
        sp.select_cache(cache, n0, torch.tensor([0, 2, 3]))
        assert sp.cache_length(cache) == n0 + 3
        got = model(torch.tensor([[nxt]]), past_key_values=cache, use_cache=True).logits[0, -1]
        want = model(torch.cat([prefix, torch.tensor([[r, b, c, nxt]])], 1)).logits[0, -1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# sampled speculative decoding: the output distribution is the target's


class TableLM(nn.Module):
    """A toy LM: logits at each position from a table indexed by (position mod 3, token). It writes one dummy
    entry per position into the KV cache (so crops move its positions like a real model's); ~0.1 ms a call."""

    def __init__(self, seed: int, vocab: int, scale: float):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(scale * torch.randn(3, vocab, vocab, generator=g, dtype=torch.float64),
                                  requires_grad=False)

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        start = 0 if past_key_values is None else past_key_values.get_seq_length()
        if past_key_values is not None:
            dummy = torch.zeros(1, 1, input_ids.shape[1], 1)
            past_key_values.update(dummy, dummy, 0)
        pos = (torch.arange(input_ids.shape[1]) + start) % 3
        return type("Out", (), {"logits": self.table[pos, input_ids[0]][None]})()

    def probs(self, seq):
        return torch.softmax(self.table[(len(seq) - 1) % 3, seq[-1]], -1)


def exact_joint(model, prompt, n_new, vocab):
    """P(x1..xn | prompt) for every sequence, enumerated."""
    out = {}
    for xs in itertools.product(range(vocab), repeat=n_new):
        seq, prob = list(prompt), 1.0
        for x in xs:
            prob *= float(model.probs(torch.tensor(seq))[x])
            seq.append(x)
        out[xs] = prob
    return out


def sample_joint(target, draft, step, prompt, n_new, gamma, n, seed):
    """Counts of the n_new-token continuations over n runs of draft_generate; checks each run's stats add up."""
    gen = torch.Generator().manual_seed(seed)
    counts = {}
    for _ in range(n):
        out, st = sp.draft_generate(target, draft, prompt, gamma, n_new, step=step, greedy=False, generator=gen,
                                    stop_at_eos=False)
        key = tuple(out[0, len(prompt):].tolist())
        counts[key] = counts.get(key, 0) + 1
        assert st.new_tokens == n_new and st.draft_calls == gamma * st.target_calls
        assert st.produced == st.accepted + st.target_calls and st.proposed == gamma * st.target_calls
    return counts


def test_sampled_distribution_matches_the_target_and_detects_a_wrong_step():
    """V = 3, 3 new tokens (27 outcomes), gamma = 2, seed 0: with the correct step the chi-square p-value against
    the enumerated target distribution is > 0.001 (1500 samples); resampling from p instead of the residual
    gives p < 1e-6 with 600 samples (it gives ~1e-30 there: the test can fail)."""
    vocab, prompt = 3, [1, 2, 0]
    target, draft = TableLM(0, vocab, 1.5), TableLM(1, vocab, 1.5)
    exact = exact_joint(target, prompt, 3, vocab)
    keys = sorted(exact)
    probs = torch.tensor([exact[k] for k in keys])
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-9)
    for step, ok, n in ((correct_step, True, 1500), (resample_from_p_step, False, 600)):
        counts = sample_joint(target, draft, step, prompt, 3, 2, n, seed=0)
        stat, dof, pval = sp.chi_square(torch.tensor([counts.get(k, 0) for k in keys]), probs)
        assert dof == 26
        assert (pval > 1e-3) if ok else (pval < 1e-6), (step.__name__, stat, pval)
    emp = sp.empirical_distribution([0, 2, 2, 1], vocab)
    assert emp.tolist() == [0.25, 0.25, 0.5]


def test_step_contract_is_checked(tiny):
    model, _, ids = tiny
    draft = sp.make_draft(model, 1)
    gen = torch.Generator(device=model.device).manual_seed(0)
    with pytest.raises(ValueError, match="step"):
        sp.draft_generate(model, draft, ids[0], 3, 5, step=lambda p, q, d, g: [], greedy=False, generator=gen)
    with pytest.raises(ValueError, match="step"):
        sp.draft_generate(model, draft, ids[0], 3, 5, step=lambda p, q, d, g: [int(d[0]) + 1, 5], greedy=False,
                          generator=gen)
    with pytest.raises(ValueError, match="greedy=False"):
        sp.draft_generate(model, draft, ids[0], 3, 5, greedy=False)
    with pytest.raises(ValueError, match="greedy=False"):
        sp.draft_generate(model, draft, ids[0], 3, 5, step=correct_step)

    seen = {}

    def spy(p, q, d, g):
        seen.update(p=p.shape, q=q.shape, d=d.shape, psum=float(p.sum(-1).max()))
        return correct_step(p, q, d, g)

    out, st = sp.draft_generate(model, draft, ids[0], 3, 8, step=spy, greedy=False, generator=gen)
    assert seen["p"] == (4, model.config.vocab_size) and seen["q"] == (3, model.config.vocab_size)
    assert seen["d"] == (3,) and seen["psum"] == pytest.approx(1.0, abs=1e-5)
    assert st.draft_calls == 3 * st.target_calls


# ---------------------------------------------------------------------------------------------------------------
# the formula


@pytest.mark.parametrize("alpha,gamma", [(0.0, 3), (0.3, 1), (0.6, 4), (0.8, 6), (0.95, 2)])
def test_expected_tokens_per_call_against_a_simulation(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    ok = torch.rand(200_000, gamma, generator=g) < alpha
    accepted = torch.cumprod(ok.int(), dim=1).sum(1)  # leading acceptances
    simulated = float((accepted + 1).double().mean())
    assert sp.expected_tokens_per_call(alpha, gamma) == pytest.approx(simulated, abs=0.02)


def test_expected_tokens_edges():
    assert sp.expected_tokens_per_call(1.0, 4) == 5.0
    assert sp.expected_tokens_per_call(0.0, 4) == 1.0
    assert sp.expected_tokens_per_call(0.999999, 4) == pytest.approx(5.0, abs=1e-4)
    assert sp.expected_speedup(1.0, 4, 0.0) == 5.0
    assert sp.expected_speedup(0.5, 1, 0.5) == pytest.approx(1.5 / 1.5)
    with pytest.raises(ValueError):
        sp.expected_tokens_per_call(1.5, 2)


def test_perfect_draft_stats(tiny):
    """A draft equal to the target accepts everything: alpha = 1, gamma + 1 tokens per target call."""
    model, _, ids = tiny
    out, st = sp.draft_generate(model, sp.make_draft(model, 4), ids[0], 3, 16, stop_at_eos=False)
    assert st.alpha == 1.0 and st.acceptance_rate == 1.0 and st.rejections == 0
    assert st.tokens_per_target_call == 4.0 and st.target_calls == 4 and st.draft_calls == 12
    assert torch.equal(out, greedy_no_eos(model, ids[0], 16))


# ---------------------------------------------------------------------------------------------------------------
# Medusa


@pytest.fixture(scope="module")
def heads(tiny):
    model, tok, ids = tiny
    texts = [greedy(model, i, 20)[0] for i in ids]
    return sp.train_medusa_heads(model, texts, n_heads=3, steps=40, seed=0)


def test_medusa_heads_shape_and_init(tiny):
    model, _, _ = tiny
    h = sp.MedusaHeads(80, model.config.vocab_size, 2, model.lm_head.weight)
    x = torch.randn(5, 80)
    out = h(x)
    assert out.shape == (2, 5, model.config.vocab_size)
    torch.testing.assert_close(out[1], model.lm_head(x))  # zero-initialised residual block: starts as the LM head


def test_medusa_greedy_equals_generate(tiny, heads):
    model, _, ids = tiny
    untrained = sp.MedusaHeads(80, model.config.vocab_size, 2, model.lm_head.weight)
    for prompt in ids:
        ref = greedy(model, prompt, 24)
        for hd, tree in ((heads, None), (heads, [(0,), (1,), (2,), (0, 0), (0, 0, 0)]), (untrained, None)):
            out, st = sp.medusa_generate(model, hd, prompt, 24, tree=tree)
            assert torch.equal(out, ref)
            assert st.forward_passes <= ref.shape[1] - prompt.shape[1]
            assert st.tokens_per_forward >= 1.0
    long_ref = greedy_no_eos(model, ids[1], 30)
    out, st = sp.medusa_generate(model, heads, ids[1], 30, stop_at_eos=False)
    assert torch.equal(out, long_ref)
    assert st.produced == sum(st.accept_lengths) + st.forward_passes


def test_medusa_typical_acceptance_extremes(tiny, heads):
    model, _, ids = tiny
    ref = greedy(model, ids[0], 16)
    # threshold min(eps, delta * exp(-H)) above every probability: nothing accepted, greedy tokens, 1 per pass
    out, st = sp.medusa_generate(model, heads, ids[0], 16, greedy=False, posterior_threshold=2.0,
                                 posterior_alpha=1e9)
    assert torch.equal(out, ref) and set(st.accept_lengths) == {0}
    # threshold 0: every candidate accepted, a full-depth path each pass
    out, st = sp.medusa_generate(model, heads, ids[0], 16, greedy=False, posterior_alpha=0.0, stop_at_eos=False)
    assert set(st.accept_lengths[:-1]) == {3}
    # the paper's defaults accept something
    out, st = sp.medusa_generate(model, heads, ids[0], 16, greedy=False)
    assert st.new_tokens >= 1 and st.tokens_per_forward >= 1.0


def test_medusa_training_is_seeded_and_learns(tiny):
    model, _, ids = tiny
    texts = [greedy(model, i, 20)[0] for i in ids]
    a = sp.train_medusa_heads(model, texts, n_heads=2, steps=5, seed=1)
    b = sp.train_medusa_heads(model, texts, n_heads=2, steps=5, seed=1)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.heads[0][0].linear.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="tokenizer"):
        sp.train_medusa_heads(model, ["some text"], n_heads=1, steps=1)


def test_default_tree_is_valid():
    for k in (1, 2, 3, 4):
        tree = sp.default_tree(k)
        nodes, parents = sp._tree_layout(tree, k)
        assert len(nodes) == len(tree) + 1 and all(parents[i] < i for i in range(1, len(nodes)))
    with pytest.raises(ValueError, match="parent"):
        sp._tree_layout([(0, 1)], 2)


@pytest.mark.slow
def test_sampled_distribution_on_a_real_llama():
    """End to end with KV caches: a random Llama with a 4-token vocabulary and a 1-layer self-draft, 3 new tokens,
    gamma 2, 3000 samples: chi-square p-value > 0.001 against the enumerated joint distribution."""
    vocab = 4
    target = random_llama(0, vocab_size=vocab, initializer_range=0.3)
    draft = sp.make_draft(target, 1)
    prompt = [3, 1, 0, 2]
    probs = {}
    with torch.no_grad():
        for xs in itertools.product(range(vocab), repeat=3):
            seq = torch.tensor([prompt + list(xs)])
            p = torch.softmax(target(seq).logits[0].double(), -1)
            probs[xs] = math.prod(float(p[len(prompt) - 1 + i, x]) for i, x in enumerate(xs))
    keys = sorted(probs)
    counts = sample_joint(target, draft, correct_step, prompt, 3, 2, 3000, seed=0)
    stat, dof, pval = sp.chi_square(torch.tensor([counts.get(k, 0) for k in keys]),
                                    torch.tensor([probs[k] for k in keys]))
    assert pval > 1e-3, (stat, pval)
