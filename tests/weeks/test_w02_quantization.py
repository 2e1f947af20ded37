"""sparkcourse.reference.w02_quantization (week 02's oracle) against torch's casts, hand-computed vectors from the
format definitions (FACTS.md), and NVIDIA Model Optimizer's NVFP4 when it is importable; and the FP8 benchmark's
CPU behaviour."""

from __future__ import annotations

import importlib.util
import runpy
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from sparkcourse.reference import w02_quantization as q

BENCH = ROOT / "benchmarks" / "fp8_matmul.py"


def test_fp8_rounding_matches_torch_and_saturates():
    x = torch.tensor([1.0625, 1.1875, 464.0, 500.0, -1e9, 2.0**-10, 3 * 2.0**-10], dtype=torch.float64)
    assert q.round_fp8(x, "e4m3").tolist() == [1.0, 1.25, 448.0, 448.0, -448.0, 0.0, 2.0**-8]
    y = torch.tensor([1e6, -1e6, 1.125, 1.375], dtype=torch.float64)
    assert q.round_fp8(y, "e5m2").tolist() == [57344.0, -57344.0, 1.0, 1.5]


def test_e2m1_hand_vectors():
    x = torch.tensor([0.24, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.01, 7.0, 100.0, -0.25, -2.5, -9.0])
    want = [0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, 6.0, -0.0, -2.0, -6.0]
    assert q.round_e2m1(x).tolist() == want
    assert q.e2m1_encode(torch.tensor([0.5, -6.0, 3.0])).tolist() == [1, 15, 5]
    codes = torch.arange(16, dtype=torch.uint8)
    assert q.e2m1_decode(codes).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    assert q.pack_fp4(torch.tensor([1, 2, 3, 4], dtype=torch.uint8)).tolist() == [0x21, 0x43]
    assert torch.equal(q.unpack_fp4(q.pack_fp4(codes)), codes)


def test_nvfp4_hand_vector():
    # one row, 16 + 2 columns: two blocks. amax 12 -> s_global = 12/2688 (FP32)
    row = [12.0, 6.0, 3.0, -1.0, 0.5, 0.0, 2.0, 9.0, -12.0, 1.5, 0.2, 4.0, 7.0, -3.0, 0.1, 2.9, 0.3, -0.6]
    w = torch.tensor([row], dtype=torch.float64)
    packed, s_block, s_global = q.nvfp4_quantize(w)
    sg = float(torch.tensor(12 / 2688, dtype=torch.float32))
    assert s_global == sg
    # block 1: amax 12 -> (12/6)/sg = 448 exactly; block 2: amax 0.6 -> (0.1)/sg = 22.4 -> E4M3 22 (spacing 2)
    assert s_block.tolist() == [[448.0, 22.0]]
    assert packed.shape == (1, 16)
    d = q.nvfp4_dequantize(packed, s_block, s_global, 18)[0]
    step1 = 448 * sg  # = 2: values are E2M1(x/2)*2
    # sg in FP32 is slightly above 12/2688, so the ties 1.5/2 and 7/2 fall just below and round down
    want1 = [12, 6, 3, -1, 0, 0, 2, 8, -12, 1, 0, 4, 6, -3, 0, 3]
    assert torch.allclose(d[:16], torch.tensor(want1, dtype=torch.float64) * step1 / 2, rtol=1e-6)
    s2 = 22 * sg  # x/s2: 0.3/0.0982 = 3.05 -> 3, -0.6/0.0982 = -6.11 -> -6 (saturates)
    assert torch.allclose(d[16:], torch.tensor([3 * s2, -6 * s2], dtype=torch.float64), rtol=1e-9)


def test_nvfp4_blocks_stay_in_their_row():
    w = torch.zeros(2, 20, dtype=torch.float64)
    w[0] = 1000.0
    w[1, :4] = 1.0  # a quiet row: its own blocks, never one shared with the loud row (which would flush it to 0)
    d = q.nvfp4_qdq(w)
    assert torch.allclose(d[1, :4], w[1, :4], rtol=0.1)


def test_mxfp4_rules():
    w = torch.tensor([[7.0, 1.0, 0.4] + [0.0] * 29], dtype=torch.float64)
    assert q.mxfp4_qdq(w, rule="ocp")[0, :3].tolist() == [6.0, 1.0, 0.5]  # scale 2^(2-2)=1, 7 saturates
    assert q.mxfp4_qdq(w, rule="ceil")[0, :3].tolist() == [8.0, 1.0, 0.0]  # scale 2^ceil(log2 7/6)=2
    z = torch.zeros(3, 40, dtype=torch.float64)
    assert torch.equal(q.mxfp4_qdq(z), z)


def test_int4_and_fp8_qdq():
    w = torch.tensor([[7.0, -3.5, 1.0, 0.49]], dtype=torch.float64)
    assert q.int4_qdq(w, 4).tolist() == [[7.0, -4.0, 1.0, 0.0]]  # s = 1; round half to even: -3.5 -> -4
    x = torch.randn(5, 9, dtype=torch.float64)
    assert float(q.fp8_qdq(x).abs().max()) == pytest.approx(float(x.abs().max()), rel=1e-12)
    assert q.sqnr_db(x, x * 1.1) == pytest.approx(20.0, rel=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("modelopt") is None, reason="nvidia-modelopt not installed")
def test_nvfp4_matches_model_optimizer():
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    g = torch.Generator().manual_seed(0)
    for shape, s in (((24, 80), 0.03), ((7, 48), 5.0), ((3, 16), 1e-3)):
        w = torch.randn(*shape, generator=g) * s
        w[0] *= 20
        qt, bs, gs = NVFP4QTensor.quantize(w, block_size=16)
        theirs = qt.dequantize(dtype=torch.float32, scale=bs, double_scale=gs, block_sizes={-1: 16})
        packed, _, s_global = q.nvfp4_quantize(w)
        assert torch.equal(qt._quantized_data, packed)
        assert float(gs) == pytest.approx(s_global, rel=1e-7)
        assert torch.allclose(theirs.double(), q.nvfp4_qdq(w), rtol=1e-6, atol=1e-12)


def test_fp8_benchmark_exits_cleanly_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU path")
    out = tmp_path / "t.md"
    proc = subprocess.run([sys.executable, str(BENCH), "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU" in proc.stdout
    assert not out.exists()


def test_fp8_benchmark_error_and_table_on_cpu():
    bench = runpy.run_path(str(BENCH))
    g = torch.Generator().manual_seed(1)
    a = torch.randn(33, 40, generator=g)
    a8, sa = bench["quantize_e4m3"](a)
    assert a8.dtype == torch.float8_e4m3fn
    assert float(a8.float().abs().max() * sa) == pytest.approx(float(a.abs().max()), rel=1e-6)
    back = a8.float() * sa
    ref = q.fp8_qdq(a).float()
    assert torch.allclose(back, ref, rtol=1e-6, atol=1e-7)
    assert bench["rel_error"](a, a) == 0.0
    assert bench["rel_error"](a * 1.01, a) == pytest.approx(0.01, rel=1e-4)
    row = dict(shape=(16, 4096, 14336), bf16_tflops=500.0, fp8_tflops=900.0, speedup=1.8, bf16_err=1e-3,
               fp8_err=3e-2)
    text = bench["markdown"]([row], "TestCard", "python benchmarks/fp8_matmul.py", "torch x")
    assert "TestCard" in text and "date:" in text and "command:" in text and "| 16 × 4096 × 14336 |" in text


def test_scaled_mm_fp8_helper_on_cpu():
    """The spark cell's FP8 product (sparkcourse.gpu.scaled_mm_fp8) runs on torch's CPU kernel too: it must equal
    scale_a * scale_b * (a @ b.T) computed from the FP8 values in float32, up to the BF16 output rounding."""
    from sparkcourse import gpu

    g = torch.Generator().manual_seed(3)
    a = (torch.randn(32, 64, generator=g) * 50).to(torch.float8_e4m3fn)
    b = (torch.randn(48, 64, generator=g) * 50).to(torch.float8_e4m3fn)
    got = gpu.scaled_mm_fp8(a, b, 0.5, 0.125).float()
    want = 0.5 * 0.125 * (a.float() @ b.float().T)
    assert got.shape == (32, 48)
    assert float((got - want).norm() / want.norm()) < 4e-3  # BF16 output: 8 bits of mantissa
    assert gpu.fp8_supported((8, 9)) and gpu.fp8_supported((12, 1)) and not gpu.fp8_supported((8, 6))
    assert gpu.fp4_supported((10, 0)) and gpu.fp4_supported((12, 1)) and not gpu.fp4_supported((9, 0))
    assert not gpu.fp4_supported(None)


def test_blocked_scales_layout():
    """cuBLAS's block-scale layout (cuBLAS docs, "1D block scaling factors layout"): in a 128x4 tile, scale (r, c)
    sits at offset (r % 32) * 16 + (r // 32) * 4 + c; tiles follow row-tile-major, padded with zeros."""
    from sparkcourse import gpu

    s = torch.arange(1, 130 * 5 + 1, dtype=torch.float32).view(130, 5)
    out = gpu.blocked_scales(s)
    assert out.numel() == 256 * 8  # rows padded to 256, scale columns to 8
    for r, c in ((0, 0), (1, 0), (31, 3), (32, 0), (127, 2), (5, 4), (129, 4), (128, 0)):
        tile = (r // 128) * 2 + c // 4  # two column tiles per row tile
        rr, cc = r % 128, c % 4
        assert out[tile * 512 + (rr % 32) * 16 + (rr // 32) * 4 + cc] == s[r, c]
    assert int((out != 0).sum()) == s.numel()
