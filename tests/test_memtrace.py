"""sparkcourse.memtrace: coalescing, bank conflicts and shared-memory races measured in the CUDA simulator."""

import pytest

from sparkcourse.gpu import setup_numba

try:  # must run before numba is imported anywhere in this process
    setup_numba(force_simulator=True)
except RuntimeError as exc:  # pragma: no cover - another module imported numba without the simulator
    pytest.skip(f"numba already imported without the CUDA simulator: {exc}", allow_module_level=True)

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda.simulator import kernel as sim_kernel  # noqa: E402
from numba.cuda.simulator import kernelapi as sim_api  # noqa: E402

from sparkcourse.memtrace import Race, TraceReport, trace  # noqa: E402
from sparkcourse.reference import w01_cuda_numba as w01  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TILE, ROWS = w01.TILE, w01.ROWS  # tiled transposes: TILE x TILE tiles, blocks of TILE x ROWS threads
SMALL = 16  # 16 x 16 tiles with 16 x 16 blocks
NBINS = 8
RED = 64  # threads per block of the reductions (as week 01's reference block_sum)


# Kernels (one cuda.shared.array per line: the simulator keys allocations by source line)


@cuda.jit
def copy_1d(a, out):
    i = cuda.grid(1)
    if i < a.size:
        out[i] = a[i]


@cuda.jit
def strided_copy(a, out, stride):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i * stride]


@cuda.jit
def copy_2d(a, out):
    x, y = cuda.grid(2)
    if y < a.shape[0] and x < a.shape[1]:
        out[y, x] = a[y, x]


@cuda.jit
def copy_2d_rows_fastest(a, out):
    x, y = cuda.grid(2)  # x walks down the rows: neighbouring threads are a whole row apart
    if x < a.shape[0] and y < a.shape[1]:
        out[x, y] = a[x, y]


@cuda.jit
def upper_half_copy(a, out):
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    if ty < 4:
        out[ty * 8 + tx] = a[ty * 8 + tx]


def _variant(kernel, **constants):
    """A simulator kernel compiled again with some of its module's constants replaced (a planted mistake)."""
    fn = kernel.fn
    return cuda.jit(types.FunctionType(fn.__code__, {**fn.__globals__, **constants}, fn.__name__))


def _small_tile_transpose(tile_shape):
    """A SMALL x SMALL transpose, one element per thread, through a shared tile of ``tile_shape``."""

    @cuda.jit
    def kernel(a, out):
        tile = cuda.shared.array(tile_shape, np.float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tile[ty, tx] = a[cuda.blockIdx.y * SMALL + ty, cuda.blockIdx.x * SMALL + tx]
        cuda.syncthreads()
        out[cuda.blockIdx.x * SMALL + ty, cuda.blockIdx.y * SMALL + tx] = tile[tx, ty]

    return kernel


naive_transpose = w01.transpose_naive  # week 01's: coalesced reads, strided writes
tiled_transpose = w01.transpose_tiled  # week 01's: a TILE x (TILE + 1) tile
tiled_transpose_unpadded = _variant(w01.transpose_tiled, TILE_PAD=w01.TILE)
small_tile_transpose = _small_tile_transpose((SMALL, SMALL + 1))
small_tile_transpose_unpadded = _small_tile_transpose((SMALL, SMALL))
block_sum = w01.block_sum  # the course's correct tree reduction (blocks of w01.RBLOCK == RED threads)


@cuda.jit
def block_sum_missing_sync(a, out):
    s = cuda.shared.array(RED, np.float32)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    s[t] = a[i] if i < a.size else 0.0
    cuda.syncthreads()
    stride = RED // 2
    while stride > 0:
        if t < stride:
            s[t] += s[t + stride]
        stride //= 2  # planted bug: no syncthreads() between the tree levels
    if t == 0:
        out[cuda.blockIdx.x] = s[0]


@cuda.jit(device=True)
def load_pair(s, t, stride):
    return s[t] + s[t + stride]


@cuda.jit
def block_sum_dynamic(a, out):
    s = cuda.shared.array(0, np.float32)  # sized by the launch's dynamic shared memory
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    s[t] = a[i] if i < a.size else 0.0
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if t < stride:
            s[t] = load_pair(s, t, stride)
        cuda.syncthreads()
        stride //= 2
    if t == 0:
        out[cuda.blockIdx.x] = s[0]


def _histogram(sync_before_merge):
    """Per-block NBINS counts in shared memory, merged into ``bins``; without the barrier before the merge (the
    planted bug) a thread reads its bin while others may still be adding to it."""

    @cuda.jit
    def kernel(data, bins):
        h = cuda.shared.array(NBINS, np.int32)
        t = cuda.threadIdx.x
        if t < NBINS:
            h[t] = 0
        cuda.syncthreads()
        i = cuda.grid(1)
        if i < data.size:
            cuda.atomic.add(h, data[i], 1)
        if sync_before_merge:
            cuda.syncthreads()
        if t < NBINS:
            cuda.atomic.add(bins, t, h[t])

    return kernel


histogram, histogram_missing_sync = _histogram(True), _histogram(False)


# An independent model of the expected numbers


def strided_sectors(n: int, stride: int, itemsize: int) -> tuple[int, int]:
    """(touched, ideal) sectors when thread i of 1-D warps reads element i * stride of an aligned array."""
    touched = ideal = 0
    for start in range(0, n, 32):
        lanes = np.arange(start, min(start + 32, n))
        touched += len(np.unique(lanes * stride * itemsize // 32))
        ideal += math.ceil(len(lanes) * itemsize / 32)
    return touched, ideal


def stat(report: TraceReport, array: str, kind: str):
    """The one global row for ``array`` and ``kind``."""
    (row,) = [s for s in report.global_stats if s.array == array and s.kind == kind]
    return row


def shared_stat(report: TraceReport, kind: str):
    """The one shared row of ``kind``."""
    (row,) = [s for s in report.shared_stats if s.kind == kind]
    return row


# Coalescing


def test_coalesced_copy_is_fully_efficient_with_a_partial_last_block():
    a = np.arange(300, dtype=np.float32)
    out = np.zeros_like(a)
    report = trace(copy_1d, 3, 128, a, out)
    np.testing.assert_array_equal(out, a)
    assert report.global_efficiency() == 1.0
    load = stat(report, "a", "load")
    assert (load.position, load.requests) == (0, 10)  # ceil(300 / 32) warps did work
    assert load.sectors == load.ideal_sectors == math.ceil(300 * 4 / 32)
    assert stat(report, "out", "store").position == 1
    assert report.global_efficiency(0) == report.global_efficiency("out", "store") == 1.0
    assert report.bank_conflicts == 0 and report.max_bank_degree == 1 and report.races == []


def test_stride_33_puts_every_thread_in_its_own_sector():
    a = np.arange(64 * 33, dtype=np.float32)
    out = np.zeros(64, dtype=np.float32)
    report = trace(strided_copy, 1, 64, a, out, 33)
    np.testing.assert_array_equal(out, a[::33])
    assert report.global_efficiency("a", "load") == pytest.approx(4 / 32)  # 128 useful bytes over 32 sectors
    assert stat(report, "a", "load").sectors == 64
    assert report.global_efficiency("out", "store") == 1.0


@pytest.mark.parametrize(
    ("stride", "dtype"), [(2, np.float32), (33, np.float32), (33, np.float64), (1, np.float64)]
)
def test_strided_efficiency_matches_the_sector_model(stride, dtype):
    n = 100  # three full warps and one of four threads
    a = np.arange(n * stride, dtype=dtype)
    out = np.zeros(n, dtype=dtype)
    report = trace(strided_copy, 2, 64, a, out, stride)
    np.testing.assert_array_equal(out, a[::stride])
    touched, ideal = strided_sectors(n, stride, np.dtype(dtype).itemsize)
    load = stat(report, "a", "load")
    assert (load.sectors, load.ideal_sectors, load.requests) == (touched, ideal, 4)
    assert report.global_efficiency("a", "load") == pytest.approx(ideal / touched)


def test_float64_coalesced_copy():
    a = np.linspace(0, 1, 100)
    out = np.zeros_like(a)
    report = trace(copy_1d, 2, 64, a, out)
    np.testing.assert_array_equal(out, a)
    load = stat(report, "a", "load")
    assert load.sectors == load.ideal_sectors == 3 * 8 + 1  # 256 bytes per full warp, 32 for the last
    assert load.bytes_requested == 800
    assert report.global_efficiency() == 1.0


def test_misaligned_device_view_costs_one_sector_per_warp():
    d_a = cuda.to_device(np.arange(129, dtype=np.float32))
    d_out = cuda.device_array(128, dtype=np.float32)
    report = trace(copy_1d, 1, 128, d_a[1:], d_out)  # starts 4 bytes into its allocation
    np.testing.assert_array_equal(d_out.copy_to_host(), np.arange(1, 129, dtype=np.float32))
    load = stat(report, "a", "load")
    assert (load.requests, load.sectors, load.ideal_sectors) == (4, 20, 16)
    assert report.global_efficiency("a") == pytest.approx(0.8)
    assert report.global_efficiency("out") == 1.0


def test_2d_blocks_group_warps_x_fastest():
    a = np.arange(64, dtype=np.float32)
    out = np.zeros_like(a)
    report = trace(upper_half_copy, 1, (8, 8), a, out)  # threads with y < 4 are exactly warp 0
    np.testing.assert_array_equal(out[:32], a[:32])
    assert stat(report, "a", "load").requests == 1
    assert stat(report, "out", "store").requests == 1


def test_2d_copy_row_major_vs_column_walk_and_fortran_order():
    a = np.arange(20 * 24, dtype=np.float32).reshape(20, 24)  # 96-byte rows, neither side a block multiple
    out = np.zeros_like(a)
    good = trace(copy_2d, (2, 5), (16, 4), a, out)
    np.testing.assert_array_equal(out, a)
    assert good.global_efficiency() == 1.0

    out = np.zeros_like(a)
    bad = trace(copy_2d_rows_fastest, (2, 6), (16, 4), a, out)
    np.testing.assert_array_equal(out, a)
    # 16 lanes on 16 rows x 2 adjacent columns: 16 sectors for 4 sectors' worth of data
    assert bad.global_efficiency("a", "load") == pytest.approx(0.25)

    a_f = np.asfortranarray(a)
    out = np.zeros_like(a)
    fortran = trace(copy_2d, (2, 5), (16, 4), a_f, out)
    np.testing.assert_array_equal(out, a)
    assert fortran.global_efficiency("a", "load") == pytest.approx(0.25)  # same kernel, column-major input
    assert fortran.global_efficiency("out", "store") == 1.0


# Transposes and bank conflicts


def test_naive_transpose_writes_are_uncoalesced():
    a = np.arange(40 * 24, dtype=np.float32).reshape(40, 24)
    out = np.zeros((24, 40), dtype=np.float32)
    report = trace(naive_transpose, (2, 5), (16, 8), a, out)
    np.testing.assert_array_equal(out, a.T)
    assert report.global_efficiency("a", "load") == 1.0
    assert report.global_efficiency("out", "store") == pytest.approx(0.25)  # 16 rows x 8 bytes per warp
    assert report.shared_stats == [] and report.races == []


def test_padded_tiled_transpose_is_coalesced_and_conflict_free():
    a = np.arange(40 * 24, dtype=np.float32).reshape(40, 24)
    out = np.zeros((24, 40), dtype=np.float32)
    report = trace(tiled_transpose, (1, 2), (TILE, ROWS), a, out)
    np.testing.assert_array_equal(out, a.T)
    assert report.global_efficiency("a", "load") >= 0.9
    assert report.global_efficiency("out", "store") >= 0.9
    assert report.bank_conflicts == 0 and report.max_bank_degree == 1
    assert {s.array for s in report.shared_stats} == {"tile"}
    assert report.races == []


def test_unpadded_tiled_transpose_has_tile_way_conflicts_on_column_reads():
    a = np.arange(40 * 24, dtype=np.float32).reshape(40, 24)
    out = np.zeros((24, 40), dtype=np.float32)
    report = trace(tiled_transpose_unpadded, (1, 2), (TILE, ROWS), a, out)
    np.testing.assert_array_equal(out, a.T)
    # Reading tile[tx, ty + j]: word 32 * tx + ty + j, so every active lane hits the same bank.
    # Output rows are 24 (3 loop trips per warp, 8 warps, per block); block y=0 has 32 active lanes
    # (x < 40), block y=1 has 8: extra wavefronts 24 * 31 + 24 * 7.
    load = shared_stat(report, "load")
    assert (load.requests, load.conflicts, load.max_degree) == (48, 24 * 31 + 24 * 7, TILE)
    assert shared_stat(report, "store").conflicts == 0  # row writes: consecutive words
    assert report.bank_conflicts == 24 * 31 + 24 * 7 and report.max_bank_degree == 32
    assert report.global_efficiency() == 1.0  # the same global traffic as the padded version


def test_16x16_tiles_padding_trades_8_way_for_2_way_conflicts():
    a = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    out = np.zeros_like(a)
    plain = trace(small_tile_transpose_unpadded, 1, (SMALL, SMALL), a, out)
    np.testing.assert_array_equal(out, a.T)
    # A warp is two 16-wide rows. tile[tx, ty]: word 16 * tx + ty, 8 lanes per bank.
    assert shared_stat(plain, "load").max_degree == 8 and shared_stat(plain, "load").conflicts == 8 * 7
    assert shared_stat(plain, "store").conflicts == 0

    out = np.zeros_like(a)
    padded = trace(small_tile_transpose, 1, (SMALL, SMALL), a, out)
    np.testing.assert_array_equal(out, a.T)
    # Stride 17: the two rows of a warp collide in exactly one bank, on both writes and reads.
    assert padded.max_bank_degree == 2 and padded.bank_conflicts == 8 + 8


# Races


def test_reduction_missing_syncthreads_is_a_race():
    a = np.arange(200, dtype=np.float32)
    out = np.zeros(4, dtype=np.float32)
    report = trace(block_sum_missing_sync, 4, RED, a, out)
    assert report.races, report.summary()
    race = report.races[0]
    assert isinstance(race, Race)
    assert race.array == "s" and race.kind in {"RAW", "WAR", "WAW"}
    assert race.threads[0] != race.threads[1] and race.interval == 1
    assert len(race.index) == 1 and 0 <= race.index[0] < RED
    assert "s[" in race.describe()
    assert {r.block for r in report.races} == {(b, 0, 0) for b in range(4)}


def test_correct_reduction_is_race_free_and_unchanged_by_tracing():
    a = np.arange(200, dtype=np.float32)
    traced_out = np.zeros(4, dtype=np.float32)
    report = trace(block_sum, 4, RED, a, traced_out)
    plain_out = np.zeros(4, dtype=np.float32)
    block_sum[4, RED](a, plain_out)
    np.testing.assert_array_equal(traced_out, plain_out)
    np.testing.assert_allclose(traced_out, [a[i : i + RED].sum() for i in range(0, 200, RED)])
    assert report.races == []
    assert report.bank_conflicts == 0


def test_dynamic_shared_memory_and_device_functions_are_traced():
    a = np.arange(100, dtype=np.float32)
    out = np.zeros(2, dtype=np.float32)
    report = trace(block_sum_dynamic, 2, RED, a, out, sharedmem=RED * 4)
    np.testing.assert_allclose(out, [a[:RED].sum(), a[RED:].sum()])
    assert block_sum_dynamic.dynshared_size == 0  # the launch configuration is put back
    assert report.races == [] and report.bank_conflicts == 0
    assert {s.array for s in report.shared_stats} == {"s"}
    # Per block: six tree levels (strides 32 ... 1, only warp 0 active) with two loads each in load_pair,
    # then thread 0 reads s[0]; stores: the initial fill (2 warps) and one per level.
    assert shared_stat(report, "load").requests == 2 * (6 * 2 + 1)
    assert shared_stat(report, "store").requests == 2 * (2 + 6)


def test_shared_atomics_are_not_races_but_a_missing_barrier_is():
    rng = np.random.default_rng(0)
    data = rng.integers(0, NBINS, 150).astype(np.int32)
    bins = np.zeros(NBINS, dtype=np.int32)
    report = trace(histogram, 2, 128, data, bins)
    np.testing.assert_array_equal(bins, np.bincount(data, minlength=NBINS))
    assert report.races == []
    assert stat(report, "bins", "atomic").requests == 2  # one warp per block adds its bins
    assert {s.kind for s in report.global_stats if s.array == "bins"} == {"atomic"}
    assert report.global_efficiency() == 1.0  # atomics are left out unless asked for
    assert all(s.kind != "atomic" for s in report.shared_stats)

    bins = np.zeros(NBINS, dtype=np.int32)
    racy = trace(histogram_missing_sync, 2, 128, data, bins)
    assert racy.races and racy.races[0].array == "h" and racy.races[0].kind in {"RAW", "WAR"}
    assert sorted(racy.races[0].accesses) == ["atomic", "load"]
    assert "atomically" in racy.races[0].describe()


# The report and the launch


def test_tracing_does_not_change_results():
    a = np.random.default_rng(1).random((40, 24), dtype=np.float32)
    for kernel in (tiled_transpose, naive_transpose):
        traced, plain = np.zeros((24, 40), np.float32), np.zeros((24, 40), np.float32)
        grid, block = ((1, 2), (TILE, ROWS)) if kernel is tiled_transpose else ((2, 5), (16, 8))
        trace(kernel, grid, block, a, traced)
        kernel[grid, block](a, plain)
        np.testing.assert_array_equal(traced, plain)
        np.testing.assert_array_equal(traced, a.T)


def test_summary_and_dict():
    a = np.arange(64 * 33, dtype=np.float32)
    out = np.zeros(64, dtype=np.float32)
    report = trace(strided_copy, 1, 64, a, out, 33)
    text = report.summary()
    assert "strided_copy" in text and "a (arg 0)" in text and "0.12" in text and "races: none" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["blockdim"] == [64, 1, 1] and data["races"] == []
    assert data["global"][0]["array"] == "a" and data["global"][0]["efficiency"] == pytest.approx(0.125)
    racy = trace(block_sum_missing_sync, 1, RED, np.ones(RED, np.float32), np.zeros(1, np.float32))
    assert "racy locations" in racy.summary()
    assert json.loads(json.dumps(racy.to_dict()))["races"][0]["array"] == "s"


def test_selection_errors_are_clear():
    a = np.arange(64, dtype=np.float32)
    report = trace(copy_1d, 1, 64, a, np.zeros_like(a))
    with pytest.raises(KeyError, match="nope"):
        report.global_efficiency("nope")
    with pytest.raises(ValueError, match="no global stores"):
        report.global_efficiency("a", "store")
    with pytest.raises(ValueError, match="kind"):
        report.global_efficiency(kind="write")


def test_hooks_are_removed_even_when_the_kernel_fails():
    originals = (
        sim_kernel.BlockThread.__init__,
        sim_kernel.BlockThread.syncthreads,
        sim_kernel.BlockManager.run,
        sim_api.FakeCUDAShared.array,
        sim_api.FakeCUDAAtomic.add,
    )
    with pytest.raises(IndexError):
        trace(strided_copy, 1, 32, np.zeros(10, np.float32), np.zeros(32, np.float32), 1)
    assert originals == (
        sim_kernel.BlockThread.__init__,
        sim_kernel.BlockThread.syncthreads,
        sim_kernel.BlockManager.run,
        sim_api.FakeCUDAShared.array,
        sim_api.FakeCUDAAtomic.add,
    )
    copy_1d[1, 32](np.ones(32, np.float32), out := np.zeros(32, np.float32))  # plain launches still work
    assert out.sum() == 32


def test_without_the_simulator_trace_says_how_to_fix_it():
    code = (
        "import numpy as np\n"
        "from numba import cuda\n"
        "from sparkcourse.memtrace import trace\n"
        "@cuda.jit\n"
        "def k(a):\n"
        "    a[0] = 1\n"
        "try:\n"
        "    trace(k, 1, 1, np.zeros(1))\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "sparkcourse.gpu.setup_numba" in result.stdout, result.stderr
