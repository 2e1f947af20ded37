"""sparkcourse.reference.w06_mamba against its oracles: scipy's ZOH, transformers' MambaMixer and selective scan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparkcourse import capacity
from sparkcourse.models import random_llama
from sparkcourse.reference import w06_mamba as ref

torch.set_num_threads(2)


def _stable(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    return M - (torch.linalg.eigvals(M).real.max() + 0.5) * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize(("n", "dt"), [(1, 0.3), (3, 0.05), (7, 0.11)])
def test_zoh_matches_scipy(n, dt):
    from scipy.signal import cont2discrete

    A = _stable(n, n)
    B = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    Ad, Bd, *_ = cont2discrete((A.numpy(), B.numpy(), np.ones((1, n)), np.zeros((1, 1))), dt, method="zoh")
    Abar, Bbar = ref.discretize_zoh(A, B, dt)
    np.testing.assert_allclose(Abar.numpy(), Ad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(Bbar.numpy(), Bd, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("L", [1, 5, 37])
def test_convolution_view_equals_recurrence(L):
    g = torch.Generator().manual_seed(L)
    n = 4
    Abar, Bbar = ref.discretize_zoh(_stable(n, 3), torch.randn(n, dtype=torch.float64, generator=g), 0.1)
    C = torch.randn(n, dtype=torch.float64, generator=g)
    u = torch.randn(3, L, dtype=torch.float64, generator=g)
    K = ref.ssm_kernel(Abar, Bbar, C, L)
    torch.testing.assert_close(ref.causal_conv(K, u), ref.ssm_recurrent(Abar, Bbar, C, u), rtol=1e-10, atol=1e-12)
    # against numpy's full convolution, truncated to the first L outputs (causal)
    np.testing.assert_allclose(ref.causal_conv(K, u)[1].numpy(), np.convolve(u[1].numpy(), K.numpy())[:L],
                               rtol=1e-10, atol=1e-12)


def _scan_inputs(b, d, n, L, seed):
    g = torch.Generator().manual_seed(seed)

    def r(*s):  # float32-representable float64 values: transformers casts u and B to float32 in its scan
        return torch.randn(*s, generator=g).double()

    return dict(u=r(b, d, L), delta=r(b, d, L), A=-torch.rand(d, n, generator=g).double() - 0.1,
                B=r(b, n, L), C=r(b, n, L), D=r(d), z=r(b, d, L), delta_bias=r(d) * 0.5)


@pytest.mark.parametrize(("b", "d", "n", "L"), [(1, 1, 1, 1), (2, 5, 3, 11), (3, 7, 16, 29)])
def test_selective_scan_matches_transformers(b, d, n, L):
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    kw = _scan_inputs(b, d, n, L, seed=L)
    want, want_state = mamba_selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"], z=kw["z"],
                                            delta_bias=kw["delta_bias"], delta_softplus=True,
                                            return_last_state=True)
    got, state = ref.selective_scan(**kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, want_state, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [1, 2, 3, 8, 31, 100])
def test_parallel_scan_equals_sequential(L):
    g = torch.Generator().manual_seed(L)
    a = torch.rand(2, 3, L, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, L, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ref.parallel_scan(a, b), ref.sequential_scan(a, b), rtol=1e-12, atol=1e-12)


def _tiny_mamba(seed=0, **over):
    from transformers import MambaConfig, MambaModel

    torch.manual_seed(seed)
    cfg = dict(vocab_size=31, hidden_size=10, state_size=5, num_hidden_layers=2, expand=2, conv_kernel=3,
               time_step_rank=3) | over
    return MambaModel(MambaConfig(**cfg)).double().eval(), cfg


@pytest.mark.parametrize("over", [{}, {"conv_kernel": 4, "state_size": 3, "use_bias": True}])
def test_mixer_matches_transformers(over):
    model, cfg = _tiny_mamba(**over)
    mixer = model.layers[1].mixer
    with torch.no_grad():
        mixer.A_log.add_(0.3 * torch.randn_like(mixer.A_log))
        mixer.D.add_(torch.randn_like(mixer.D))
        x = torch.randn(2, 13, cfg["hidden_size"], dtype=torch.float64)
        want = mixer(x)
        got = ref.mamba_mixer(x, mixer.state_dict())
    # transformers computes A = -exp(A_log) in float32: agreement to ~1e-7, not 1e-12
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_state_bytes_match_transformers_cache():
    model, cfg = _tiny_mamba()
    sizes = set()
    for L in (3, 17):
        with torch.no_grad():
            cache = model(torch.randint(0, 31, (2, L)), use_cache=True).cache_params
        tensors = [t for layer in cache.layers for s in (layer.conv_states, layer.recurrent_states) for t in s.values()]
        sizes.add(sum(t.numel() * t.element_size() for t in tensors))
    assert sizes == {ref.recurrent_state_bytes(cfg, batch=2, bytes_per_value=8)}


def test_kv_bytes_match_transformers_cache_and_planner():
    cfg = dict(vocab_size=31, hidden_size=24, intermediate_size=20, num_hidden_layers=3, num_attention_heads=6,
               num_key_value_heads=2)
    model = random_llama(None, base_model=True, **cfg)
    with torch.no_grad():
        cache = model(torch.randint(0, 31, (3, 11)), use_cache=True).past_key_values
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert ref.kv_cache_bytes(cfg, 11, batch=3, bytes_per_value=4) == measured
    llama70 = capacity.CONFIGS["meta-llama/Meta-Llama-3-70B"]
    assert ref.kv_cache_bytes(llama70, 1000) == 1000 * capacity.kv_bytes_per_token(llama70, 2)
