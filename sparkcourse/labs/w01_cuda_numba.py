"""Week 01 lab code: launching a kernel the way the grader sees it, and timing kernels on a GPU.

Import after ``sparkcourse.gpu.setup_numba()`` (this module imports ``numba.cuda``). Nothing here answers an
exercise: :func:`launch` and :func:`run_benchmarks` take the student's kernels as arguments. The kernels defined
here (:func:`matmul_regblock`, :func:`block_sum_shuffle`) belong to ungraded lab sections.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda, float32

from sparkcourse.memtrace import TraceReport, trace
from sparkcourse.simtrace import DEFAULT_TIMEOUT_S, trace_in_simulator

RB_TILE = 64  # register-blocked matmul: a 64 x 64 tile of C per block ...
RB_MICRO = 4  # ... 4 x 4 outputs per thread, so blocks of 16 x 16 threads
RB_K = 16  # the K-slice staged in shared memory per step
RB_THREADS = RB_TILE // RB_MICRO


@contextmanager
def small_grids_ok() -> Iterator[None]:
    """Silence numba's "Grid size N will likely result in GPU under-utilization" for launches that are small on
    purpose (the last passes of a reduction or scan); the warning about host arrays stays on."""
    from numba.core.errors import NumbaPerformanceWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*under-utilization", category=NumbaPerformanceWarning)
        yield


def run_on_device(kernel: Any, griddim: Any, blockdim: Any, *args: Any) -> None:
    """Run a launch on the GPU with explicit transfers: numpy arrays go up with ``cuda.to_device`` and come back
    with ``copy_to_host`` into the same numpy arrays (what numba would do implicitly, warning each time)."""
    from numba.core.errors import NumbaPerformanceWarning

    on_device = [cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args]
    with warnings.catch_warnings():  # the tests' grids are tiny on purpose: no "under-utilization" warning
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        kernel[griddim, blockdim](*on_device)
    cuda.synchronize()
    for host, dev in zip(args, on_device, strict=True):
        if isinstance(host, np.ndarray) and host.flags.writeable:
            host[...] = dev.copy_to_host()


def launch(kernel: Any, griddim: Any, blockdim: Any, *args: Any, simulating: bool,
           timeout: float = DEFAULT_TIMEOUT_S) -> TraceReport:
    """Launch ``kernel`` and return the tracer's report of its access pattern — on a GPU too.

    Simulating: one traced launch in this process (what the grader does). On a GPU: first the same launch is
    traced in the CUDA simulator in a child process (:func:`sparkcourse.simtrace.trace_in_simulator`, from the
    kernel's source and copies of the arguments as they are now), then the kernel runs on the GPU and its
    results land in the numpy arrays. The values come from the GPU, the access pattern from the simulator.
    """
    if simulating:
        return trace(kernel, griddim, blockdim, *args)
    report = trace_in_simulator(kernel, griddim, blockdim, *args, timeout=timeout)
    run_on_device(kernel, griddim, blockdim, *args)
    return report


# ---- ungraded lab kernels --------------------------------------------------------------------------------


@cuda.jit
def matmul_regblock(A, B, C):
    """C = A @ B (float32): each block computes a 64 x 64 tile of C, each of its 16 x 16 threads a 4 x 4
    micro-tile held in registers, from 64 x 16 / 16 x 64 slices of A and B staged in shared memory."""
    sA = cuda.shared.array((64, 16), float32)
    sB = cuda.shared.array((16, 64), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * 16 + tx
    row0 = cuda.blockIdx.y * 64
    col0 = cuda.blockIdx.x * 64
    acc = cuda.local.array((4, 4), float32)
    a_reg = cuda.local.array(4, float32)
    b_reg = cuda.local.array(4, float32)
    for i in range(4):
        for j in range(4):
            acc[i, j] = 0.0
    for k0 in range(0, A.shape[1], 16):
        for p in range(4):  # 256 threads load 64 x 16 = 1024 elements of A and of B: 4 each, coalesced
            e = p * 256 + tid
            r, c = e // 16, e % 16
            ok = row0 + r < A.shape[0] and k0 + c < A.shape[1]
            sA[r, c] = A[row0 + r, k0 + c] if ok else float32(0.0)
            r, c = e // 64, e % 64
            ok = k0 + r < B.shape[0] and col0 + c < B.shape[1]
            sB[r, c] = B[k0 + r, col0 + c] if ok else float32(0.0)
        cuda.syncthreads()
        for k in range(16):
            for i in range(4):
                a_reg[i] = sA[ty + 16 * i, k]  # rows ty, ty+16, ...: a warp reads 2 rows -> broadcasts
                b_reg[i] = sB[k, tx + 16 * i]  # columns tx, tx+16, ...: consecutive lanes, consecutive banks
            for i in range(4):
                for j in range(4):
                    acc[i, j] += a_reg[i] * b_reg[j]
        cuda.syncthreads()
    for i in range(4):
        for j in range(4):
            r, c = row0 + ty + 16 * i, col0 + tx + 16 * j
            if r < C.shape[0] and c < C.shape[1]:
                C[r, c] = acc[i, j]


def regblock_grid(m: int, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Grid and block of :func:`matmul_regblock` for an m x n result."""
    return (-(-n // RB_TILE), -(-m // RB_TILE)), (RB_THREADS, RB_THREADS)


@cuda.jit
def block_sum_shuffle(x, total):
    """total[0] += sum(x): warp sums with shuffles, one shared slot per warp, one atomic per block.
    Needs a real GPU (Numba's CUDA simulator has no warp shuffles)."""
    warp_sums = cuda.shared.array(32, float32)
    lane = cuda.threadIdx.x % 32
    warp = cuda.threadIdx.x // 32
    v = float32(0.0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v += x[i]
    offset = 16
    while offset > 0:
        v += cuda.shfl_down_sync(0xFFFFFFFF, v, offset)
        offset //= 2
    if lane == 0:
        warp_sums[warp] = v
    cuda.syncthreads()
    if warp == 0:
        n_warps = (cuda.blockDim.x + 31) // 32
        v = warp_sums[lane] if lane < n_warps else float32(0.0)
        offset = 16
        while offset > 0:
            v += cuda.shfl_down_sync(0xFFFFFFFF, v, offset)
            offset //= 2
        if lane == 0:
            cuda.atomic.add(total, 0, v)


# ---- timing on a GPU -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One measured kernel: seconds per launch and the rate as a fraction of a ceiling measured in the run."""

    name: str
    size: str
    seconds: float
    rate: float  # GB/s or TFLOP/s
    unit: str
    ratio: float  # rate / ceiling


def event_seconds(fn: Callable[[], object], repeats: int = 10, simulating: bool = False) -> float:
    """Median seconds of ``fn()``: CUDA events around each call on a GPU (after one warm-up call that compiles),
    ``perf_counter`` in the simulator (one call: a smoke test, not a measurement)."""
    if simulating:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    fn()
    times = []
    for _ in range(repeats):
        start, end = cuda.event(timing=True), cuda.event(timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cuda.event_elapsed_time(start, end) / 1e3)
    return statistics.median(times)


def run_benchmarks(k: Mapping[str, Any], *, tiny: bool, repeats: int = 20) -> list[BenchRow]:
    """Time the week's kernels, given by name in ``k`` (copy_coalesced as a grid-stride loop, strided_copy,
    transpose_naive, transpose_tiled, hist_global, hist_shared, matmul_naive, matmul_tiled; absent or None
    ones are skipped), against torch's device copy and cuBLAS fp32 measured in the same run.

    ``tiny``: simulator-sized smoke test (timings mean nothing). Device arrays throughout: nothing is copied
    between host and device inside a timed launch.
    """
    import torch

    from sparkcourse.gpu import copy_bandwidth, time_cuda

    simulating = tiny
    rng = np.random.default_rng(0)
    if tiny:
        n_copy, stride, tshape, n_hist, (m, kk, n) = 1000, 33, (40, 24), 1500, (20, 19, 21)
        sms = 1
    else:
        n_copy, stride, tshape, n_hist, (m, kk, n) = 64 * 2**20, 33, (8192, 8192), 64 * 2**20, (4096, 4096, 4096)
        sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    reps = 1 if tiny else repeats

    def blocks(count: int, block: int) -> int:
        return -(-count // block)

    def timed(fn: Callable[[], object]) -> float:
        return event_seconds(fn, reps, simulating)

    rows: list[BenchRow] = []
    bw = copy_bandwidth(n_copy * 4, repeats=reps)
    rows.append(BenchRow("torch device copy (ceiling)", f"{n_copy:,} fp32", 2 * n_copy * 4 / bw, bw / 1e9, "GB/s",
                         1.0))

    def bw_row(name: str, size: str, seconds: float, nbytes: float) -> None:
        rows.append(BenchRow(name, size, seconds, nbytes / seconds / 1e9, "GB/s", nbytes / seconds / bw))

    a = cuda.to_device(rng.random(n_copy, dtype=np.float32))
    out = cuda.device_array(n_copy, np.float32)
    if k.get("copy_coalesced") is not None:
        copy = k["copy_coalesced"]
        grid = max(1, min(blocks(n_copy, 256), sms * 32))
        bw_row("coalesced copy (grid-stride)", f"{n_copy:,} fp32", timed(lambda: copy[grid, 256](a, out)),
               2 * n_copy * 4)
        a16, out16 = a.view(np.complex128), out.view(np.complex128)  # 16 bytes per thread: fewer, wider accesses
        grid16 = max(1, min(blocks(a16.size, 256), sms * 32))
        bw_row("coalesced copy, 16 B per thread", f"{n_copy:,} fp32", timed(lambda: copy[grid16, 256](a16, out16)),
               2 * n_copy * 4)
    if k.get("strided_copy") is not None:
        n_out = n_copy // stride
        out_s = cuda.device_array(n_out, np.float32)
        strided = k["strided_copy"]
        bw_row(f"stride-{stride} copy (useful bytes)", f"{n_out:,} fp32",
               timed(lambda: strided[blocks(n_out, 256), 256](a, out_s, stride)), 2 * n_out * 4)
    ta = cuda.to_device(rng.random(tshape, dtype=np.float32))
    tout = cuda.device_array(tshape[::-1], np.float32)
    tsize, tbytes = f"{tshape[0]}x{tshape[1]} fp32", 2 * tshape[0] * tshape[1] * 4
    if k.get("transpose_naive") is not None:
        naive_t, grid = k["transpose_naive"], (blocks(tshape[1], 32), blocks(tshape[0], 8))
        bw_row("naive transpose", tsize, timed(lambda: naive_t[grid, (32, 8)](ta, tout)), tbytes)
    if k.get("transpose_tiled") is not None:
        tiled_t, grid = k["transpose_tiled"], (blocks(tshape[1], 32), blocks(tshape[0], 32))
        bw_row("tiled transpose (32x33 tile)", tsize, timed(lambda: tiled_t[grid, (32, 8)](ta, tout)), tbytes)
    data = cuda.to_device(rng.integers(0, 256, n_hist).astype(np.int32))
    bins = cuda.device_array(256, np.int32)
    if k.get("hist_global") is not None:
        hg = k["hist_global"]
        bw_row("global-atomics histogram (256 bins)", f"{n_hist:,} int32",
               timed(lambda: hg[blocks(n_hist, 256), 256](data, bins)), n_hist * 4)
    if k.get("hist_shared") is not None:
        hs, grid = k["hist_shared"], max(1, min(blocks(n_hist, 256), sms * 8))
        bw_row("privatised histogram (256 bins)", f"{n_hist:,} int32", timed(lambda: hs[grid, 256](data, bins)),
               n_hist * 4)

    device = "cpu" if simulating or not torch.cuda.is_available() else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    tA, tB = torch.randn(m, kk, device=device), torch.randn(kk, n, device=device)
    flops = 2 * m * kk * n
    if simulating:
        t0 = time.perf_counter()
        torch.matmul(tA, tB)
        s_blas = time.perf_counter() - t0
    else:
        s_blas = time_cuda(lambda: torch.matmul(tA, tB), repeats=reps)
    blas = flops / s_blas
    A, B = cuda.to_device(tA.cpu().numpy()), cuda.to_device(tB.cpu().numpy())
    C = cuda.device_array((m, n), np.float32)
    size = f"{m}x{kk}x{n} fp32"

    def mm_row(name: str, kernel: Any, grid: Any, block: Any) -> None:
        s = timed(lambda: kernel[grid, block](A, B, C))
        rows.append(BenchRow(name, size, s, flops / s / 1e12, "TFLOP/s", flops / s / blas))

    grid16 = (blocks(n, 16), blocks(m, 16))
    if k.get("matmul_naive") is not None:
        mm_row("naive matmul", k["matmul_naive"], grid16, (16, 16))
    if k.get("matmul_tiled") is not None:
        mm_row("tiled matmul (16x16)", k["matmul_tiled"], grid16, (16, 16))
    mm_row("register-blocked matmul (64x64 tile, 4x4 per thread)", matmul_regblock, *regblock_grid(m, n))
    rows.append(BenchRow("cuBLAS fp32 via torch.matmul (ceiling)", size, s_blas, blas / 1e12, "TFLOP/s", 1.0))
    return rows


def markdown_rows(rows: list[BenchRow]) -> list[str]:
    """The rows as a markdown table."""
    lines = ["| kernel | size | time (ms) | achieved | ratio to ceiling |", "|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.size} | {r.seconds * 1e3:.3f} | {r.rate:.2f} {r.unit} | {r.ratio:.3f} |"
              for r in rows]
    return lines
