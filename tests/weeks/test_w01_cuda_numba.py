"""Week 01 reference kernels, run in the CUDA simulator, against numpy/torch oracles and the memtrace tracer."""

import pytest

from sparkcourse.gpu import setup_numba

try:  # must run before numba is imported anywhere in this process
    setup_numba(force_simulator=True)
except RuntimeError as exc:  # pragma: no cover - another module imported numba without the simulator
    pytest.skip(f"numba already imported without the CUDA simulator: {exc}", allow_module_level=True)

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import ROOT  # noqa: E402

from sparkcourse.memtrace import trace  # noqa: E402
from sparkcourse.reference import w01_cuda_numba as ref  # noqa: E402

RNG = np.random.default_rng(0)


def kinds(report, name):
    return {s.kind for s in report.global_stats if s.array == name}


def test_saxpy_both_ways_on_an_awkward_size():
    n = 301
    x, y = RNG.random(n), RNG.random(n)
    out = np.zeros(n)
    ref.saxpy[ref.blocks_for(n, 64), 64](2.5, x, y, out)
    np.testing.assert_allclose(out, 2.5 * x + y)
    out = np.zeros(n)
    report = trace(ref.saxpy_gridstride, 2, 32, -1.5, x, y, out)  # 64 threads for 301 elements
    np.testing.assert_allclose(out, -1.5 * x + y)
    assert report.global_efficiency() == 1.0
    assert ref.is_kernel(ref.saxpy) and not ref.is_kernel(np.add)


@pytest.mark.parametrize(("stride", "itemsize"), [(1, 4), (2, 4), (33, 4), (1, 8), (3, 8), (16, 2)])
def test_warp_efficiency_model_matches_the_tracer(stride, itemsize):
    dtype = {2: np.float16, 4: np.float32, 8: np.float64}[itemsize]
    a = np.arange(32 * stride, dtype=dtype)
    out = np.zeros(32, dtype=dtype)
    report = trace(ref.strided_copy, 1, 32, a, out, stride)
    np.testing.assert_array_equal(out, a[::stride])
    assert report.global_efficiency("a", "load") == pytest.approx(ref.warp_efficiency(stride, itemsize))


def test_coalesced_copy_is_fully_efficient():
    a = RNG.random(333).astype(np.float32)
    out = np.zeros_like(a)
    report = trace(ref.copy_coalesced, 3, 64, a, out)
    np.testing.assert_array_equal(out, a)
    assert report.global_efficiency() == 1.0
    assert ref.warp_efficiency(33, 4) == pytest.approx(0.125)


@pytest.mark.parametrize("shape", [(37, 29), (40, 24), (5, 70)])
def test_transposes(shape):
    a = RNG.random(shape).astype(np.float32)
    out = np.zeros(shape[::-1], np.float32)
    ref.transpose_naive[(ref.blocks_for(shape[1], 16), ref.blocks_for(shape[0], 8)), (16, 8)](a, out)
    np.testing.assert_array_equal(out, a.T)
    out = np.zeros(shape[::-1], np.float32)
    grid, block = ref.transpose_grid(shape)
    report = trace(ref.transpose_tiled, grid, block, a, out)
    np.testing.assert_array_equal(out, a.T)
    assert report.bank_conflicts == 0 and report.max_bank_degree == 1 and report.races == []
    if shape == (40, 24):  # rows a whole number of sectors: the ideal case the notebook grades
        assert report.global_efficiency("a", "load") >= 0.9
        assert report.global_efficiency("out", "store") >= 0.9


def test_reduction_is_right_and_race_free():
    x = RNG.standard_normal(300).astype(np.float32)
    nb = ref.blocks_for(300, ref.RBLOCK)
    partial = np.zeros(nb, np.float32)
    report = trace(ref.block_sum, nb, ref.RBLOCK, x, partial)
    want = [x[i:i + ref.RBLOCK].astype(np.float64).sum() for i in range(0, 300, ref.RBLOCK)]
    np.testing.assert_allclose(partial, want, rtol=1e-5, atol=1e-5)
    assert report.races == [] and report.bank_conflicts == 0


def test_histograms_match_bincount_and_privatisation_cuts_global_atomics():
    data = RNG.integers(0, ref.NBINS, 1500).astype(np.int32)
    want = np.bincount(data, minlength=ref.NBINS)
    bins = np.zeros(ref.NBINS, np.int32)
    g = trace(ref.hist_global, ref.blocks_for(1500, 128), 128, data, bins)
    np.testing.assert_array_equal(bins, want)
    assert kinds(g, "bins") == {"atomic"}
    bins = np.zeros(ref.NBINS, np.int32)
    s = trace(ref.hist_shared, 2, 64, data, bins)
    np.testing.assert_array_equal(bins, want)
    assert kinds(s, "bins") == {"atomic"} and s.races == [] and s.shared_stats
    ops = lambda r: sum(st.bytes_requested // 4 for st in r.global_stats if st.kind == "atomic")  # noqa: E731
    assert ops(s) <= 2 * ref.NBINS < ops(g)


@pytest.mark.parametrize(("m", "k", "n"), [(20, 19, 21), (5, 33, 7)])
def test_matmuls(m, k, n):
    A = RNG.standard_normal((m, k)).astype(np.float32)
    B = RNG.standard_normal((k, n)).astype(np.float32)
    want = A.astype(np.float64) @ B.astype(np.float64)
    grid, block = ref.matmul_grid(m, n)
    C = np.zeros((m, n), np.float32)
    ref.matmul_naive[grid, block](A, B, C)
    np.testing.assert_allclose(C, want, rtol=1e-4, atol=1e-4)
    C = np.zeros((m, n), np.float32)
    report = trace(ref.matmul_tiled, grid, block, A, B, C)
    np.testing.assert_allclose(C, want, rtol=1e-4, atol=1e-4)
    assert report.races == [] and report.shared_stats


def test_embedding_forward_and_backward_match_torch_autograd():
    V, D, T = 11, 24, 37
    weight = RNG.standard_normal((V, D))
    ids = RNG.integers(0, V, T).astype(np.int64)
    ids[:5] = 3  # repeated ids
    grad_out = RNG.standard_normal((T, D))
    w = torch.tensor(weight, requires_grad=True)
    y = torch.nn.functional.embedding(torch.tensor(ids), w)
    y.backward(torch.tensor(grad_out))
    grid, block = ref.embedding_grid(T, D)
    out = np.zeros((T, D))
    f = trace(ref.embedding_forward, grid, block, weight, ids, out)
    np.testing.assert_array_equal(out, y.detach().numpy())
    assert f.global_efficiency("out", "store") == 1.0
    gw = np.zeros((V, D))
    b = trace(ref.embedding_backward, grid, block, grad_out, ids, gw)
    np.testing.assert_allclose(gw, w.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert kinds(b, "grad_weight") == {"atomic"}


def test_decode_seconds():
    assert ref.decode_seconds(100e9, 128e9, 273e9, 1) == pytest.approx(100 / 273)
    assert ref.decode_seconds(110e9, 80e9, 3.35e12, 64e9) == pytest.approx(80 / 3350 + 30 / 64)


@pytest.mark.slow
def test_benchmark_script_tiny(tmp_path):
    out = tmp_path / "bench.md"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_numba.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for needle in ("| kernel |", "coalesced copy", "stride-33 copy", "tiled transpose", "privatised histogram",
                   "tiled matmul", "register-blocked matmul", "cuBLAS", "python benchmarks/cuda_numba.py"):
        assert needle in text, needle


# ---- the GPU path of the notebook's launch, exercised on a CPU --------------------------------------------


def test_launch_on_the_gpu_path_traces_in_a_child_process_like_the_grader():
    """``simulating=False`` is the Spark's branch: the trace comes from a child simulator process (from the kernel's
    source), the values from "the device" (here the simulator again, through explicit to_device/copy_to_host)."""
    from sparkcourse.labs import w01_cuda_numba as lab

    a = RNG.random((37, 29)).astype(np.float32)
    out = np.zeros((29, 37), np.float32)
    grid, block = ref.transpose_grid(a.shape)
    child = lab.launch(ref.transpose_tiled, grid, block, a, out, simulating=False)
    np.testing.assert_array_equal(out, a.T)  # results copied back into the caller's numpy array
    here = trace(ref.transpose_tiled, grid, block, a, np.zeros_like(out))
    assert child.to_dict() == here.to_dict()
    assert child.shared_stats and child.bank_conflicts == 0 and child.races == []
    # a view keeps its offset into the allocation it belongs to, so sector counts match too
    src = np.arange(40 * 34, dtype=np.float32)
    view = src[3:]
    got = np.zeros(40, np.float32)
    child = lab.launch(ref.strided_copy, 2, 32, view, got, 33, simulating=False)
    np.testing.assert_array_equal(got, view[::33][:40])
    assert child.to_dict() == trace(ref.strided_copy, 2, 32, view, np.zeros(40, np.float32), 33).to_dict()


def test_simtrace_sends_device_functions_and_reports_the_simulators_errors(tmp_path):
    from numba import cuda

    from sparkcourse.simtrace import SimTraceError, trace_in_simulator

    module = tmp_path / "w01_student_kernels.py"
    module.write_text(
        "from numba import cuda\n"
        "SCALE = 3.0\n\n"
        "@cuda.jit(device=True)\n"
        "def triple(v):\n"
        "    return SCALE * v\n\n"
        "@cuda.jit\n"
        "def apply(x, out):\n"
        "    i = cuda.grid(1)\n"
        "    if i < out.size:\n"
        "        out[i] = triple(x[i])\n\n"
        "@cuda.jit\n"
        "def unguarded(x, out):\n"
        "    out[cuda.grid(1)] = x[cuda.grid(1)]\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import w01_student_kernels as student
    finally:
        sys.path.remove(str(tmp_path))
    x = np.arange(50.0)
    report = trace_in_simulator(student.apply, 2, 32, x, np.zeros(50))
    assert report.to_dict() == trace(student.apply, 2, 32, x, np.zeros(50)).to_dict()
    with pytest.raises(SimTraceError, match="IndexError"):  # a GPU would write past the end silently
        trace_in_simulator(student.unguarded, 2, 32, x, np.zeros(50))
    with pytest.raises(SimTraceError, match="more than"):
        trace_in_simulator(student.apply, 2, 32, x, np.zeros(50), timeout=0.05)
    scope: dict = {"cuda": cuda}
    exec("def made_by_exec(x):\n    x[0] = 1\n", scope)  # no source file to recover
    with pytest.raises(SimTraceError, match="cannot recover the source"):
        trace_in_simulator(cuda.jit(scope["made_by_exec"]), 1, 1, np.zeros(1))


def test_register_blocked_matmul_matches_numpy_in_one_block():
    from sparkcourse.labs import w01_cuda_numba as lab

    A = RNG.standard_normal((40, 19)).astype(np.float32)
    B = RNG.standard_normal((19, 37)).astype(np.float32)
    C = np.zeros((40, 37), np.float32)
    grid, block = lab.regblock_grid(40, 37)
    assert grid == (1, 1) and block == (16, 16)
    lab.matmul_regblock[grid, block](A, B, C)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B.astype(np.float64), rtol=1e-4, atol=1e-4)


def _visible_cell(grade_id: str) -> str:
    from sparkcourse.grader.authoring import NOTEBOOK_KINDS, split_blocks, strip_hidden

    text = (ROOT / "authoring" / "01-cuda-numba.py").read_text()
    (block,) = [b for b in split_blocks(text, NOTEBOOK_KINDS, default_kind="code") if b.opts.get("id") == grade_id]
    return strip_hidden(block.text)


def test_visible_warp_efficiency_test_catches_one_over_stride_and_passes_the_reference():
    import math

    from sparkcourse.testing import CheckFailed, check_number, check_property

    cell = _visible_cell("test_warp_efficiency")
    base = {"math": math, "np": np, "check_number": check_number, "check_property": check_property}
    exec(cell, {**base, "warp_efficiency": ref.warp_efficiency})
    with pytest.raises(CheckFailed, match="wider stride"):
        exec(cell, {**base, "warp_efficiency": lambda stride, itemsize: 1.0 / stride})
