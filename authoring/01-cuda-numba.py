# %% markdown
# # Week 01 — CUDA Python with Numba: indexing, coalescing, shared memory, atomics
#
# Every fast model on a DGX Spark ends in GPU kernels: an embedding lookup, a transpose, a reduction, a
# matrix multiply. This week you write those kernels yourself in Python with `numba.cuda` — and measure not only
# *whether* they are right but *how they touch memory*, because on the Spark's GB10 every byte comes out of the
# same **273 GB/s** LPDDR5x pool the CPU uses (NVIDIA DGX Spark product page). A kernel that wastes 7 of every 8
# bytes it fetches runs at an eighth of that.
#
# **You will learn to**
# 1. map threads and blocks onto data (1-D grids, grid-stride loops, bounds checks for sizes that are not a
#    multiple of the block);
# 2. predict and measure **coalescing** (32-byte sectors per warp request) and fix a transpose with a
#    **shared-memory tile**, padded against **bank conflicts**;
# 3. write a **reduction** with barriers, a **histogram** with atomics and with shared-memory privatisation,
#    and a **tiled matrix multiplication**;
# 4. write the **embedding lookup** of every language model and its backward pass (a scatter-add with atomics);
# 5. say what unified memory changes on a Spark compared with a discrete GPU, with numbers.
#
# **Time:** about 4 hours for the graded exercises (readers took 3.5–4.5 h), plus 1.5–2 hours for the ungraded
# lab sections (8: complete reductions and warp shuffles, scan, device functions, GPU ufuncs, transfers,
# streams, occupancy, profiling, a register-blocked matmul) and the GPU timings (9). **Points:** 25, all autograded;
# sections 8 and 9 are not graded.
#
# **How this notebook runs.** Without a GPU (and always when graded) `numba.cuda` runs kernels in Numba's
# **CUDA simulator** on the CPU: every thread is a Python thread, so sizes are tiny (hundreds of elements,
# matrices 20–40 wide). The simulator lets us do something a GPU cannot: `sparkcourse.memtrace.trace` records
# every global and shared access of every thread and reports **sector efficiency**, **bank conflicts** and
# **shared-memory races**. The hidden tests grade your kernels' results *and* these numbers.
#
# On a Spark (profile `spark`) `launch` below runs each test's kernel on the **GPU** (the values you see come
# from it) *and* traces the same launch in the CUDA simulator in a separate Python process — the simulator
# cannot be switched on in a process whose numba already drives a GPU — from your kernel's source. So the visible
# tests check the same access-pattern properties on a Spark as when graded; a kernel the simulator rejects (an
# out-of-bounds index that a GPU silently lets through, for one) fails here too, with the simulator's message.
# Each traced launch costs a few seconds. The GPU timings are a separate, ungraded section (9).

# %% setup id=setup
import math

import numpy as np

import sparkcourse as sc
from sparkcourse import gpu

profile = sc.setup()
SIMULATING = gpu.setup_numba(force_simulator=not profile.is_spark)  # before numba is imported
from numba import cuda, float32, int32  # noqa: E402

from sparkcourse.labs import w01_cuda_numba as lab  # noqa: E402
from sparkcourse.memtrace import trace  # noqa: E402
from sparkcourse.testing import check_close, check_number, check_property  # noqa: E402

TILE, ROWS = 32, 8  # transpose: 32 x 32 tiles moved by 32 x 8 thread blocks
TILE_PAD = 33  # TILE + 1: a shared array's shape must be a compile-time constant on a real GPU
RBLOCK = 64  # threads per block of the reduction
NBINS = 256  # histogram bins
MM_TILE = 16  # matmul: 16 x 16 tiles and blocks
print("CUDA simulator" if SIMULATING else f"GPU: {cuda.get_current_device().name}")


def blocks_for(n, block):
    """Blocks of `block` threads needed to cover `n` items."""
    return -(-n // block)


def launch(kernel, grid, block, *args):
    """Launch `kernel` and return the tracer's report of its memory accesses. In the simulator: one traced
    launch. On a GPU: traced in the simulator in a child process, then run on the GPU with explicit transfers
    (numpy arrays in, results copied back into them)."""
    check_property(type(kernel) is type(blocks_kernel_probe), f"{getattr(kernel, '__name__', kernel)!r} is not a "
                   "@cuda.jit kernel: the work must happen on the device")
    return lab.launch(kernel, grid, block, *args, simulating=SIMULATING)


@cuda.jit
def blocks_kernel_probe(a):
    """A kernel whose type tells kernels from host functions."""
    a[0] = 0

# %% markdown
# ## 1. Threads, blocks and the grid
#
# A launch `kernel[blocks, threads](args)` runs `blocks × threads` copies of the kernel. Thread `threadIdx.x` of
# block `blockIdx.x` usually takes element $i = \text{blockIdx.x}\cdot\text{blockDim.x} + \text{threadIdx.x}$,
# which `cuda.grid(1)` computes. The grid is rounded **up** to whole blocks, so the last block has threads with
# $i \ge n$: they must do nothing (`if i < n`). Forgetting that bounds check is the most common CUDA bug; the
# simulator raises `IndexError` where a GPU would silently write past your array.
#
# A **grid-stride loop** decouples the grid from $n$: thread $i$ handles $i, i + G, i + 2G, \dots$ where
# $G$ = `cuda.gridsize(1)` is the number of threads in the grid. Any grid then covers any $n$, and in each
# trip of the loop neighbouring threads still touch neighbouring elements.

# %% markdown
# ### Exercise 1 (3 points)
# Write the kernel `saxpy(a, x, y, out)`: `out[i] = a * x[i] + y[i]`, one element per thread (the tests launch
# `blocks_for(n, 64)` blocks of 64 threads, so mind the bounds). Then `saxpy_gridstride(a, x, y, out)`: the same
# with a grid-stride loop; the tests launch **fewer threads than elements**.

# %% solution id=saxpy
@cuda.jit
def saxpy(a, x, y, out):
    ### BEGIN SOLUTION
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + y[i]
    ### END SOLUTION

# %% tests id=test_saxpy points=1
x, y = np.random.default_rng(1).random(301), np.random.default_rng(2).random(301)
out = np.zeros(301)
launch(saxpy, blocks_for(301, 64), 64, 2.0, x, y, out)
check_close(out, 2.0 * x + y, rtol=1e-12, name="saxpy on 301 elements (5 blocks of 64)")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

check_property(ref.is_kernel(saxpy), "saxpy must be a @cuda.jit kernel")
rng = np.random.default_rng(11)
for n, a in ((1, 3.0), (77, -0.5), (130, 1.25)):
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    out = np.zeros(n)
    rep = launch(saxpy, blocks_for(n, 64), 64, a, x, y, out)
    check_close(out, a * x + y, rtol=1e-12, name=f"saxpy(n={n})")
    if rep is not None:
        check_number(rep.global_efficiency(), 1.0, name=f"saxpy(n={n}) sector efficiency")
### END HIDDEN TESTS

# %% solution id=saxpy_gridstride
@cuda.jit
def saxpy_gridstride(a, x, y, out):
    ### BEGIN SOLUTION
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, out.size, stride):
        out[i] = a * x[i] + y[i]
    ### END SOLUTION

# %% tests id=test_saxpy_gridstride points=2
x, y = np.random.default_rng(3).random(301), np.random.default_rng(4).random(301)
out = np.zeros(301)
rep = launch(saxpy_gridstride, 2, 32, 2.0, x, y, out)
check_close(out, 2.0 * x + y, rtol=1e-12, name="saxpy_gridstride on 301 elements with 2 x 32 threads")
print(rep.summary())
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

check_property(ref.is_kernel(saxpy_gridstride), "saxpy_gridstride must be a @cuda.jit kernel")
rng = np.random.default_rng(12)
for n, grid, block in ((100, 1, 32), (130, 3, 64), (257, 2, 64)):
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    out = np.zeros(n)
    rep = launch(saxpy_gridstride, grid, block, -1.5, x, y, out)
    check_close(out, -1.5 * x + y, rtol=1e-12, name=f"saxpy_gridstride(n={n}, grid={grid}, block={block})")
    if rep is not None:
        check_number(rep.global_efficiency(), 1.0,
                     name="saxpy_gridstride sector efficiency (does each loop trip touch neighbouring elements?)")
        stored = sum(s.bytes_requested for s in rep.global_stats if s.array == "out" and s.kind == "store")
        check_number(stored, out.nbytes, name="bytes stored by saxpy_gridstride (each element exactly once?)")
### END HIDDEN TESTS

# %% markdown
# ## 2. Coalescing: what a warp asks of memory
#
# Threads run in **warps** of 32. When the 32 threads of a warp load at once, the hardware fetches whole
# **32-byte sectors**: if the warp's addresses are contiguous, 32 × 4 bytes of float32 need 4 sectors. If thread
# $i$ reads element $i \cdot s$, the warp's addresses spread over up to 32 sectors, and most of each sector is
# wasted. **Sector efficiency** = sectors needed for the bytes asked / sectors touched (1.0 is perfect).
#
# The picture shows, for one warp, which byte addresses the 32 lanes touch (dots) and which 32-byte sectors
# that drags in (shaded), for strides 1, 2 and 33. How many sectors the same bytes *need*, and so the
# efficiency, is yours to work out in Exercise 2a.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(3, 1, figsize=(9, 5), sharex=False)
for ax, s in zip(axes, (1, 2, 33), strict=True):
    lanes = np.arange(32)
    addr = lanes * s * 4
    for sector in np.unique(addr // 32):
        ax.axvspan(sector * 32, sector * 32 + 32, color="tab:orange", alpha=0.3)
    ax.scatter(addr, np.zeros_like(addr), c=lanes, cmap="viridis", s=14)
    ax.set_yticks([])
    ax.set_title(f"stride {s}: 32 lanes x 4 bytes touch {len(np.unique(addr // 32))} sectors", fontsize=9)
axes[-1].set_xlabel("byte address (shaded: 32-byte sectors fetched)")
plt.tight_layout()
plt.show()

# %% markdown
# ### Exercise 2a (3 points)
# Write the kernel `strided_copy(a, out, stride)`: `out[i] = a[i * stride]` for every `i < out.size`, one
# element per thread. Then `warp_efficiency(stride, itemsize)`: the sector efficiency of **one full warp** whose
# lane `l` reads element `l * stride` of an array starting at a sector boundary, elements of `itemsize` bytes.
# The tracer measures the same thing: your prediction is checked against its measurement.

# %% solution id=strided_copy
@cuda.jit
def strided_copy(a, out, stride):
    ### BEGIN SOLUTION
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i * stride]
    ### END SOLUTION

# %% tests id=test_strided_copy points=1
a = np.arange(45 * 3, dtype=np.float32)
out = np.zeros(45, dtype=np.float32)
rep = launch(strided_copy, 1, 64, a, out, 3)
check_close(out, a[::3], name="strided_copy(stride=3)")
print(rep.summary())
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for n, stride, dtype in ((37, 1, np.float64), (70, 33, np.float32), (5, 2, np.float32)):
    a = np.random.default_rng(n).random(n * stride).astype(dtype)
    out = np.zeros(n, dtype=dtype)
    rep = launch(strided_copy, blocks_for(n, 32), 32, a, out, stride)
    check_close(out, a[::stride], name=f"strided_copy(n={n}, stride={stride})")
    if rep is not None:
        check_number(rep.global_efficiency("out", "store"), 1.0, name="store efficiency of strided_copy")
### END HIDDEN TESTS

# %% solution id=warp_efficiency
def warp_efficiency(stride, itemsize):
    """Sector efficiency of one full warp reading element lane * stride (sector-aligned array)."""
    ### BEGIN SOLUTION
    sectors = {lane * stride * itemsize // 32 for lane in range(32)}
    ideal = math.ceil(32 * itemsize / 32)
    return ideal / len(sectors)
    ### END SOLUTION

# %% tests id=test_warp_efficiency points=2
check_number(warp_efficiency(1, 4), 1.0, name="warp_efficiency(1, 4): contiguous float32")
check_number(warp_efficiency(2, 4), 0.5, name="warp_efficiency(2, 4): every other float32")
wide = [warp_efficiency(s, 4) for s in (33, 64, 1000)]
check_property(all(0 < e <= 1 for e in wide), f"efficiencies must lie in (0, 1], got {wide}")
check_property(wide[0] == wide[1] == wide[2],
               f"warp_efficiency(33 | 64 | 1000, 4) = {wide}: once every lane has a 32-byte sector of its own, "
               "can a wider stride make the warp touch more sectors, or need fewer?")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for stride, itemsize in ((33, 4), (3, 8), (16, 2), (1, 8), (4, 4), (7, 1), (64, 4)):
    dtype = {1: np.uint8, 2: np.float16, 4: np.float32, 8: np.float64}[itemsize]
    if SIMULATING:  # measured by the tracer; on a GPU (no tracer) against the reference model
        a = np.zeros(32 * stride, dtype=dtype)
        want = trace(ref.strided_copy, 1, 32, a, np.zeros(32, dtype=dtype), stride).global_efficiency("a", "load")
    else:
        want = ref.warp_efficiency(stride, itemsize)
    check_number(warp_efficiency(stride, itemsize), want, rtol=1e-9,
                 name=f"warp_efficiency({stride}, {itemsize}) vs the tracer's measurement")
### END HIDDEN TESTS

# %% markdown
# What the tracer measures for a coalesced and a stride-33 copy of 320 float32 (10 warps):

# %%
@cuda.jit
def copy_coalesced(a, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):  # a grid-stride loop: section 9 caps its grid
        out[i] = a[i]


if SIMULATING:
    src = np.arange(320 * 33, dtype=np.float32)
    dst = np.zeros(320, dtype=np.float32)
    good = trace(copy_coalesced, 5, 64, src[:320], dst)
    try:
        bad = trace(strided_copy, 5, 64, src, dst, 33)
        print(f"coalesced copy: load efficiency {good.global_efficiency('a', 'load'):.3f}")
        print(f"stride-33 copy: load efficiency {bad.global_efficiency('a', 'load'):.3f} "
              f"(sectors touched: {[s.sectors for s in bad.global_stats if s.kind == 'load'][0]})")
    except NotImplementedError:
        print("finish Exercise 2a first")

# %% markdown
# The tracer counts **32-byte sectors**, the unit in which L1 asks L2 for data. That makes its efficiency an
# **upper bound** on what a GPU achieves: below L1, L2 and DRAM move larger pieces (DRAM bursts of 64 bytes or
# more), so a stride-33 copy pays for at least 64 bytes per useful 4-byte float, not 32. On an H200 (benchmarks
# 2026-11-27, `benchmarks/cuda_numba_h200.md`) the stride-33 copy delivered 0.057 of the card's copy bandwidth in
# useful bytes — about half the tracer's 0.125 and close to 4/64 = 0.0625. Coalescing decides the first factor
# of 8; the memory system below adds its own.

# %% markdown
# ## 2b. The transpose
#
# `out[j, i] = a[i, j]` cannot be coalesced both ways by itself: if neighbouring threads walk along a row of `a`
# (coalesced reads), they write down a column of `out` (one sector per element). The fix: a block **loads a
# tile** of `a` into **shared memory** with coalesced reads, waits at a barrier (`cuda.syncthreads()`), then
# **writes the tile transposed**, again with neighbouring threads on neighbouring addresses of `out`.
#
# Shared memory has 32 **banks** of 4 bytes; word $w$ lives in bank $w \bmod 32$. Reading a *column* of a
# 32 × 32 float32 tile hits words $32r + c$ — all in one bank: a 32-way **bank conflict**, 32 serial
# wavefronts. Padding each row to 33 words puts column element $r$ in bank $(33 r + c) \bmod 32 = (r + c) \bmod 32$:
# all different. (With 16 × 16 tiles and 16 × 16 blocks a warp spans two tile rows and padding only trades
# 8-way for 2-way conflicts — that is why we use 32-wide tiles moved by 32 × 8 thread blocks: each thread
# copies `TILE // ROWS = 4` elements.)

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, width in zip(axes, (32, 33), strict=True):
    banks = (np.arange(32)[:, None] * width + np.arange(32)[None, :]) % 32
    ax.imshow(banks, cmap="twilight", aspect="auto")
    ax.add_patch(plt.Rectangle((4.5, -0.5), 1, 32, fill=False, ec="red", lw=2))
    col = banks[:, 5]
    ax.set_title(f"row width {width}: column 5 uses {len(set(col))} bank(s)", fontsize=9)
    ax.set_xlabel("tile column")
    ax.set_ylabel("tile row")
plt.suptitle("bank of each word of a 32 x 32 float32 tile (red: what one warp reads)", fontsize=10)
plt.tight_layout()
plt.show()

# %% markdown
# ### Exercise 2b (4 points)
# 1. `transpose_naive(a, out)` for a 2-D float32 `a` of shape (rows, cols): one element per thread, with
#    `x, y = cuda.grid(2)` and `x` running along the **columns** of `a`. The tests launch 16 × 8 blocks.
# 2. `transpose_tiled(a, out)`: a `(TILE, TILE_PAD)` float32 shared tile (`TILE_PAD = TILE + 1`, written as a
#    constant: on a real GPU numba needs literal shapes, and `TILE + 1` inside a kernel fails to compile),
#    blocks of `(TILE, ROWS)` threads,
#    grid `(blocks_for(cols, TILE), blocks_for(rows, TILE))`; each thread moves `TILE // ROWS` elements in and out.
#    Graded: the result, sector efficiency ≥ 0.9 on loads and stores, **zero** bank conflicts, no races.
#    (Declare one `cuda.shared.array` per line: the simulator tells allocations apart by source line.)

# %% solution id=transpose_naive
@cuda.jit
def transpose_naive(a, out):
    ### BEGIN SOLUTION
    x, y = cuda.grid(2)
    if y < a.shape[0] and x < a.shape[1]:
        out[x, y] = a[y, x]
    ### END SOLUTION

# %% tests id=test_transpose_naive points=1
a = np.random.default_rng(5).random((37, 29)).astype(np.float32)
out = np.zeros((29, 37), np.float32)
rep = launch(transpose_naive, (blocks_for(29, 16), blocks_for(37, 8)), (16, 8), a, out)
check_close(out, a.T, name="transpose_naive of a 37 x 29 matrix")
print(rep.summary())
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for shape in ((5, 70), (33, 17)):
    a = np.random.default_rng(shape[0]).random(shape).astype(np.float32)
    out = np.zeros(shape[::-1], np.float32)
    launch(transpose_naive, (blocks_for(shape[1], 16), blocks_for(shape[0], 8)), (16, 8), a, out)
    check_close(out, a.T, name=f"transpose_naive of shape {shape}")
### END HIDDEN TESTS

# %% solution id=transpose_tiled
@cuda.jit
def transpose_tiled(a, out):
    ### BEGIN SOLUTION
    tile = cuda.shared.array((TILE, TILE_PAD), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    x = cuda.blockIdx.x * TILE + tx
    y = cuda.blockIdx.y * TILE + ty
    for j in range(0, TILE, ROWS):
        if x < a.shape[1] and y + j < a.shape[0]:
            tile[ty + j, tx] = a[y + j, x]
    cuda.syncthreads()
    x = cuda.blockIdx.y * TILE + tx
    y = cuda.blockIdx.x * TILE + ty
    for j in range(0, TILE, ROWS):
        if x < out.shape[1] and y + j < out.shape[0]:
            out[y + j, x] = tile[tx, ty + j]
    ### END SOLUTION

# %% tests id=test_transpose_tiled points=3
a = np.random.default_rng(6).random((37, 29)).astype(np.float32)
out = np.zeros((29, 37), np.float32)
rep = launch(transpose_tiled, (blocks_for(29, TILE), blocks_for(37, TILE)), (TILE, ROWS), a, out)
check_close(out, a.T, name="transpose_tiled of a 37 x 29 matrix")
print(rep.summary())
check_property(rep.races == [], "a shared-memory race: " + (rep.races[0].describe() if rep.races else ""))
check_property(rep.bank_conflicts == 0, f"{rep.bank_conflicts} extra wavefronts from bank conflicts "
               f"(worst: {rep.max_bank_degree}-way): is the tile padded?")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for shape in ((40, 24), (5, 70)):
    a = np.random.default_rng(shape[1]).random(shape).astype(np.float32)
    out = np.zeros(shape[::-1], np.float32)
    grid, block = ref.transpose_grid(shape)
    rep = launch(transpose_tiled, grid, block, a, out)
    check_close(out, a.T, name=f"transpose_tiled of shape {shape}")
    if rep is not None:
        check_property(bool(rep.shared_stats), "transpose_tiled does not use shared memory")
        check_property(rep.races == [], "transpose_tiled has a shared-memory race")
        check_property(rep.bank_conflicts == 0 and rep.max_bank_degree == 1,
                       f"transpose_tiled has bank conflicts ({rep.max_bank_degree}-way)")
        if shape == (40, 24):
            check_property(rep.global_efficiency("a", "load") >= 0.9,
                           f"transpose_tiled load efficiency {rep.global_efficiency('a', 'load'):.2f} < 0.9")
            check_property(rep.global_efficiency("out", "store") >= 0.9,
                           f"transpose_tiled store efficiency {rep.global_efficiency('out', 'store'):.2f} < 0.9")
### END HIDDEN TESTS

# %% markdown
# ## 3. A reduction in shared memory
#
# To sum $n$ numbers, each block loads `RBLOCK` of them into shared memory and halves the active threads
# each step: thread $t < s$ adds `buf[t + s]` into `buf[t]`, for $s$ = 32, 16, …, 1. Between steps **every**
# thread must wait at `cuda.syncthreads()`: otherwise a thread reads `buf[t + s]` before its owner has written
# it — a **race**, which the tracer reports with the two threads involved. ("Sequential addressing", as here,
# is also free of bank conflicts; the interleaved `buf[2 s t]` variant is not.) The host adds the per-block sums.

# %% markdown
# ### Exercise 3 (3 points)
# Write `block_sum(x, partial)`: launched with `blocks_for(n, RBLOCK)` blocks of `RBLOCK` threads, block `b`
# writes the sum of `x[b*RBLOCK : (b+1)*RBLOCK]` to `partial[b]` (float32 shared array; threads past the end
# contribute 0).

# %% solution id=block_sum
@cuda.jit
def block_sum(x, partial):
    ### BEGIN SOLUTION
    s = cuda.shared.array(RBLOCK, float32)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    s[t] = x[i] if i < x.size else 0.0
    cuda.syncthreads()
    stride = RBLOCK // 2
    while stride > 0:
        if t < stride:
            s[t] += s[t + stride]
        cuda.syncthreads()
        stride //= 2
    if t == 0:
        partial[cuda.blockIdx.x] = s[0]
    ### END SOLUTION

# %% tests id=test_block_sum points=3
x = np.random.default_rng(7).standard_normal(300).astype(np.float32)
partial = np.zeros(blocks_for(300, RBLOCK), np.float32)
rep = launch(block_sum, len(partial), RBLOCK, x, partial)
want = [x[i:i + RBLOCK].astype(np.float64).sum() for i in range(0, 300, RBLOCK)]
check_close(partial, want, rtol=1e-5, atol=1e-5, name="per-block sums of 300 values")
print(rep.summary())
check_property(rep.races == [], "race: " + (rep.races[0].describe() if rep.races else ""))
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for n in (65, 128, 200):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    partial = np.zeros(blocks_for(n, RBLOCK), np.float32)
    rep = launch(block_sum, len(partial), RBLOCK, x, partial)
    want = [x[i:i + RBLOCK].astype(np.float64).sum() for i in range(0, n, RBLOCK)]
    check_close(partial, want, rtol=1e-5, atol=1e-5, name=f"block_sum(n={n})")
    if rep is not None:
        check_property(bool(rep.shared_stats), "block_sum does not use shared memory")
        check_property(rep.races == [], f"block_sum(n={n}) has a shared-memory race")
### END HIDDEN TESTS

# %% markdown
# ## 4. Histograms and atomics
#
# Many threads adding 1 to the same bin is a read-modify-write race: `bins[v] += 1` loses updates on a GPU
# (and may *look* right in the simulator, which is why the tests check the kind of access the tracer records).
# `cuda.atomic.add(bins, v, 1)` makes each update indivisible — but thousands of threads queueing on 256 global
# counters is slow. **Privatisation**: each block counts into its own shared-memory histogram (cheap shared
# atomics), then adds its `NBINS` counts to the global one: global atomics drop from one per element to
# `NBINS` per block.
#
# ### Exercise 4 (4 points)
# 1. `hist_global(data, bins)`: count `data` (int32 values in `[0, NBINS)`) into `bins` with global atomics.
#    The tests launch `blocks_for(n, 128)` blocks of 128 threads.
# 2. `hist_shared(data, bins)`: privatised, with a **grid-stride loop** — the tests launch only 2 blocks of 64
#    threads for 1500 values. Remember that `NBINS` > threads per block when you clear and flush the shared bins,
#    and the barriers between the three phases.

# %% solution id=hist_global
@cuda.jit
def hist_global(data, bins):
    ### BEGIN SOLUTION
    i = cuda.grid(1)
    if i < data.size:
        cuda.atomic.add(bins, data[i], 1)
    ### END SOLUTION

# %% tests id=test_hist_global points=1
data = np.random.default_rng(8).integers(0, NBINS, 500).astype(np.int32)
bins = np.zeros(NBINS, np.int32)
rep = launch(hist_global, blocks_for(500, 128), 128, data, bins)
check_close(bins, np.bincount(data, minlength=NBINS), name="hist_global counts")
got = sorted({s.kind for s in rep.global_stats if s.array == "bins"})
check_property(got == ["atomic"], f"hist_global touches bins with {got}: a read-modify-write by many threads at "
               "once loses updates on a GPU, even where the simulator's counts look right")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for n, hi in ((37, NBINS), (700, 5)):
    data = np.random.default_rng(n).integers(0, hi, n).astype(np.int32)
    bins = np.zeros(NBINS, np.int32)
    rep = launch(hist_global, blocks_for(n, 128), 128, data, bins)
    check_close(bins, np.bincount(data, minlength=NBINS), name=f"hist_global counts (n={n})")
    if rep is not None:
        got = {s.kind for s in rep.global_stats if s.array == "bins"}
        check_property(got == {"atomic"}, f"hist_global updates bins with {sorted(got)}: use atomics")
### END HIDDEN TESTS

# %% solution id=hist_shared
@cuda.jit
def hist_shared(data, bins):
    ### BEGIN SOLUTION
    h = cuda.shared.array(NBINS, int32)
    t = cuda.threadIdx.x
    for b in range(t, NBINS, cuda.blockDim.x):
        h[b] = 0
    cuda.syncthreads()
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        cuda.atomic.add(h, data[i], 1)
    cuda.syncthreads()
    for b in range(t, NBINS, cuda.blockDim.x):
        cuda.atomic.add(bins, b, h[b])
    ### END SOLUTION

# %% tests id=test_hist_shared points=3
data = np.random.default_rng(9).integers(0, NBINS, 1500).astype(np.int32)
bins = np.zeros(NBINS, np.int32)
rep = launch(hist_shared, 2, 64, data, bins)
check_close(bins, np.bincount(data, minlength=NBINS), name="hist_shared counts (2 blocks x 64 threads)")
print(rep.summary())
check_property(rep.races == [], "race: " + (rep.races[0].describe() if rep.races else ""))
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for n, grid, block, hi in ((1500, 2, 64, NBINS), (100, 3, 32, 7)):
    data = np.random.default_rng(n + 1).integers(0, hi, n).astype(np.int32)
    bins = np.zeros(NBINS, np.int32)
    rep = launch(hist_shared, grid, block, data, bins)
    check_close(bins, np.bincount(data, minlength=NBINS), name=f"hist_shared counts (n={n}, {grid} x {block})")
    if rep is not None:
        got = {s.kind for s in rep.global_stats if s.array == "bins"}
        check_property(got == {"atomic"}, f"hist_shared updates the global bins with {sorted(got)}: use atomics")
        check_property(bool(rep.shared_stats), "hist_shared does not count in shared memory")
        check_property(rep.races == [], "hist_shared has a shared-memory race (atomics? barriers?)")
        ops = sum(s.bytes_requested // 4 for s in rep.global_stats if s.array == "bins")
        check_property(ops <= grid * NBINS, "hist_shared makes more global atomic updates than NBINS per block")
### END HIDDEN TESTS

# %% markdown
# ## 5. Tiled matrix multiplication
#
# The naive kernel below computes one $C_{ij}$ per thread and reads a row of $A$ and a column of $B$ from
# global memory: $2K$ loads per output. With **tiles**, a 16 × 16 block loads a 16 × 16 tile of $A$ and of $B$
# into shared memory (each thread one element of each), waits, multiplies out of shared memory, waits again
# (so nobody overwrites a tile another thread is still reading), and moves to the next tile along $K$:
# global loads drop 16-fold. Edges: out-of-range tile elements are loaded as 0.

# %%
@cuda.jit
def matmul_naive(A, B, C):
    col, row = cuda.grid(2)
    if row < C.shape[0] and col < C.shape[1]:
        acc = 0.0
        for k in range(A.shape[1]):
            acc += A[row, k] * B[k, col]
        C[row, col] = acc


if SIMULATING and not sc.grading():
    A = np.random.default_rng(0).standard_normal((20, 19)).astype(np.float32)
    B = np.random.default_rng(1).standard_normal((19, 21)).astype(np.float32)
    C = np.zeros((20, 21), np.float32)
    naive = trace(matmul_naive, (2, 2), (16, 16), A, B, C)
    print(naive.summary())

# %% markdown
# ### Exercise 5 (3 points)
# Write `matmul_tiled(A, B, C)`: `C = A @ B` for float32 matrices of any shapes, with two
# `(MM_TILE, MM_TILE)` float32 shared arrays (one per line), blocks of `(MM_TILE, MM_TILE)` threads, grid
# `(blocks_for(n, MM_TILE), blocks_for(m, MM_TILE))` for an m × n result; `x` runs along the columns of `C`.
# Graded: the result (rtol 1e-4 against float64), no races, and far fewer global load requests than the naive
# kernel.

# %% solution id=matmul_tiled
@cuda.jit
def matmul_tiled(A, B, C):
    ### BEGIN SOLUTION
    sA = cuda.shared.array((MM_TILE, MM_TILE), float32)
    sB = cuda.shared.array((MM_TILE, MM_TILE), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    col = cuda.blockIdx.x * MM_TILE + tx
    row = cuda.blockIdx.y * MM_TILE + ty
    acc = float32(0.0)
    for k0 in range(0, A.shape[1], MM_TILE):
        sA[ty, tx] = A[row, k0 + tx] if row < A.shape[0] and k0 + tx < A.shape[1] else 0.0
        sB[ty, tx] = B[k0 + ty, col] if k0 + ty < B.shape[0] and col < B.shape[1] else 0.0
        cuda.syncthreads()
        for k in range(MM_TILE):
            acc += sA[ty, k] * sB[k, tx]
        cuda.syncthreads()
    if row < C.shape[0] and col < C.shape[1]:
        C[row, col] = acc
    ### END SOLUTION

# %% tests id=test_matmul_tiled points=3
A = np.random.default_rng(10).standard_normal((20, 19)).astype(np.float32)
B = np.random.default_rng(11).standard_normal((19, 21)).astype(np.float32)
C = np.zeros((20, 21), np.float32)
rep = launch(matmul_tiled, (blocks_for(21, MM_TILE), blocks_for(20, MM_TILE)), (MM_TILE, MM_TILE), A, B, C)
check_close(C, A.astype(np.float64) @ B.astype(np.float64), rtol=1e-4, atol=1e-4, name="matmul_tiled 20x19 @ 19x21")
print(rep.summary())
check_property(rep.races == [], "race: " + (rep.races[0].describe() if rep.races else ""))
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for m, k, n in ((5, 33, 7), (17, 3, 18)):
    A = np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)
    B = np.random.default_rng(n).standard_normal((k, n)).astype(np.float32)
    C = np.zeros((m, n), np.float32)
    grid, block = ref.matmul_grid(m, n)
    rep = launch(matmul_tiled, grid, block, A, B, C)
    want = A.astype(np.float64) @ B.astype(np.float64)
    check_close(C, want, rtol=1e-4, atol=1e-4, name=f"matmul_tiled {m}x{k} @ {k}x{n}")
    if rep is not None:
        check_property(bool(rep.shared_stats), "matmul_tiled does not use shared memory")
        check_property(rep.races == [], f"matmul_tiled {m}x{k}x{n} has a shared-memory race")
        loads = sum(s.requests for s in rep.global_stats if s.kind == "load" and s.array in ("A", "B"))
        bound = 2 * grid[0] * grid[1] * (MM_TILE * MM_TILE // 32) * blocks_for(k, MM_TILE)
        check_property(loads <= bound, f"matmul_tiled makes {loads} global load requests; tiles need <= {bound}")
### END HIDDEN TESTS

# %% markdown
# ## 6. The embedding lookup of a language model, and its gradient
#
# A language model's first layer maps token ids to rows of a `(vocab, dim)` weight: `out[t, :] = weight[ids[t], :]`
# (`torch.nn.functional.embedding`). It is a pure gather: give `x` the embedding dimension so a warp reads a
# contiguous row. The backward pass scatters: `grad_weight[ids[t], :] += grad_out[t, :]`. When a token id
# repeats (it always does: "the", ",", padding), several threads add into the same row — **atomics** again.
#
# ### Exercise 6 (3 points)
# Write `embedding_forward(weight, ids, out)` and `embedding_backward(grad_out, ids, grad_weight)` (float64;
# `grad_weight` starts at zero). Both are launched with blocks of (32, 4) threads and grid
# `(blocks_for(dim, 32), blocks_for(n_tokens, 4))`: `j, t = cuda.grid(2)`. They are checked against
# `torch.nn.functional.embedding` and its autograd gradient, with repeated ids.

# %% solution id=embedding
@cuda.jit
def embedding_forward(weight, ids, out):
    ### BEGIN SOLUTION
    j, t = cuda.grid(2)
    if t < ids.size and j < weight.shape[1]:
        out[t, j] = weight[ids[t], j]
    ### END SOLUTION


@cuda.jit
def embedding_backward(grad_out, ids, grad_weight):
    ### BEGIN SOLUTION
    j, t = cuda.grid(2)
    if t < ids.size and j < grad_out.shape[1]:
        cuda.atomic.add(grad_weight, (ids[t], j), grad_out[t, j])
    ### END SOLUTION

# %% tests id=test_embedding_forward points=1
weight = np.random.default_rng(12).standard_normal((11, 24))
ids = np.array([3, 1, 3, 10, 0, 3, 7, 1, 2], dtype=np.int64)
out = np.zeros((len(ids), 24))
rep = launch(embedding_forward, (blocks_for(24, 32), blocks_for(len(ids), 4)), (32, 4), weight, ids, out)
check_close(out, weight[ids], rtol=0, name="embedding_forward")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w01_cuda_numba as ref

for V, D, T in ((11, 24, 37), (50, 40, 5)):
    rng = np.random.default_rng(V + D)
    weight = rng.standard_normal((V, D))
    ids = rng.integers(0, V, T).astype(np.int64)
    out = np.zeros((T, D))
    grid, block = ref.embedding_grid(T, D)
    rep = launch(embedding_forward, grid, block, weight, ids, out)
    want = torch.nn.functional.embedding(torch.tensor(ids), torch.tensor(weight)).numpy()
    check_close(out, want, rtol=0, name=f"embedding_forward (V={V}, D={D}, T={T})")
    if rep is not None:
        check_property(rep.global_efficiency("out", "store") >= 0.9,
                       "embedding_forward stores are not coalesced: which index should x run along?")
### END HIDDEN TESTS

# %% tests id=test_embedding_backward points=2
ids = np.array([3, 1, 3, 10, 0, 3, 7, 1, 2], dtype=np.int64)
grad_out = np.random.default_rng(13).standard_normal((len(ids), 24))
grad_w = np.zeros((11, 24))
rep = launch(embedding_backward, (blocks_for(24, 32), blocks_for(len(ids), 4)), (32, 4), grad_out, ids, grad_w)
want = np.zeros((11, 24))
np.add.at(want, ids, grad_out)
check_close(grad_w, want, rtol=1e-12, atol=1e-12, name="embedding_backward (token 3 appears three times)")
got = sorted({s.kind for s in rep.global_stats if s.array == "grad_weight"})
check_property(got == ["atomic"], f"embedding_backward touches grad_weight with {got}: rows of repeated tokens are "
               "updated by several threads at once")
### BEGIN HIDDEN TESTS
import torch

from sparkcourse.reference import w01_cuda_numba as ref

for V, D, T in ((11, 24, 37), (6, 40, 9)):
    rng = np.random.default_rng(V * D)
    ids = rng.integers(0, V, T).astype(np.int64)
    ids[: T // 3] = V - 1  # a third of the tokens share one id
    grad_out = rng.standard_normal((T, D))
    w = torch.zeros((V, D), dtype=torch.float64, requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(ids), w).backward(torch.tensor(grad_out))
    grad_w = np.zeros((V, D))
    grid, block = ref.embedding_grid(T, D)
    rep = launch(embedding_backward, grid, block, grad_out, ids, grad_w)
    check_close(grad_w, w.grad.numpy(), rtol=1e-12, atol=1e-12, name=f"embedding_backward (V={V}, D={D}, T={T})")
    if rep is not None:
        got = {s.kind for s in rep.global_stats if s.array == "grad_weight"}
        check_property(got == {"atomic"}, f"embedding_backward updates grad_weight with {sorted(got)}: use atomics")
### END HIDDEN TESTS

# %% markdown
# ## 7. Unified memory: what the Spark changes
#
# On a **discrete** GPU (an H100 in a server) the GPU has its own memory — 80 GB of HBM3 at 3.35 TB/s (NVIDIA
# H100 SXM datasheet) — and reaches the host's memory over PCIe 5.0 x16: about 64 GB/s each way (32 GT/s × 16
# lanes). Data a kernel needs must be copied across (`cuda.to_device`), or be *managed*
# (`cuda.managed_array`): one pointer valid on CPU and GPU, pages migrated on demand by the driver.
#
# On a **GB10** the Grace CPU and the Blackwell GPU share one physical pool: **128 GB LPDDR5x at about
# 273 GB/s** (NVIDIA DGX Spark product page), joined inside the chip by NVLink-C2C. So:
# - there is no PCIe copy to pay: a managed array (or any allocation) lives in the same memory for both
#   processors; `cuda.to_device` is still correct code, but it copies within one pool;
# - the GPU can use (nearly) all 128 GB — a model that needs 110 GB fits, which on an 80 GB card means
#   streaming 30 GB over PCIe for every pass;
# - the GPU's bandwidth is the pool's ~273 GB/s, about 12× less than an H100's HBM: most kernels in this
#   notebook are bandwidth-bound, and coalescing (section 2) matters *more*, not less.
#
# ### Exercise 7 (2 points)
# Write `decode_seconds(model_bytes, device_bytes, device_bw, link_bw)`: seconds to read every weight once
# (one decoding step at batch 1), when the first `min(model_bytes, device_bytes)` bytes are resident and read at
# `device_bw` bytes/s and the rest is streamed over the link at `link_bw` (no overlap).

# %% solution id=decode_seconds
def decode_seconds(model_bytes, device_bytes, device_bw, link_bw):
    """Seconds per full read of the weights: resident bytes at device bandwidth, the rest over the link."""
    ### BEGIN SOLUTION
    if model_bytes <= device_bytes:
        return model_bytes / device_bw
    return device_bytes / device_bw + (model_bytes - device_bytes) / link_bw
    ### END SOLUTION

# %% tests id=test_decode_seconds points=2
check_number(decode_seconds(27.3e9, 128e9, 273e9, 64e9), 0.1, name="a 27.3 GB model that fits, at 273 GB/s")
### BEGIN HIDDEN TESTS
from sparkcourse.reference import w01_cuda_numba as ref

for args in ((112.5e9, 80e9, 3.35e12, 64e9), (112.5e9, 128e9, 273e9, 1.0), (1e9, 1e9, 2e12, 5e10),
             (200e9, 141e9, 4.8e12, 64e9)):
    check_number(decode_seconds(*args), ref.decode_seconds(*args), rtol=1e-9, name=f"decode_seconds{args}")
### END HIDDEN TESTS

# %% markdown
# A 200B-parameter model at NVFP4 is 200e9 × 4.5 / 8 = 112.5 GB. One decoding step reads all of it:

# %%
size = 200e9 * 4.5 / 8
for name, args in (("DGX Spark: 128 GB at 273 GB/s", (size, 128e9, 273e9, 1.0)),
                   ("H100 80 GB (3.35 TB/s) + PCIe 5.0 x16 (64 GB/s)", (size, 80e9, 3.35e12, 64e9))):
    try:
        t = decode_seconds(*args)
        print(f"{name:50s} {t:6.3f} s per token -> {1 / t:5.2f} tokens/s")
    except NotImplementedError:
        print("finish Exercise 7 first")
        break

# %% markdown
# `cuda.managed_array` in practice: the host writes, the GPU scales in place, the host reads — no explicit
# copies. (The CUDA simulator has no managed memory, so this cell runs only on a GPU.)

# %%
@cuda.jit
def scale_inplace(a, factor):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] *= factor


if not SIMULATING and hasattr(cuda, "managed_array"):
    m = cuda.managed_array(1 << 20, dtype=np.float32)
    m[:] = np.arange(m.size, dtype=np.float32)  # the host writes straight into it
    scale_inplace[256, 256](m, 2.0)
    cuda.synchronize()  # the host must wait before reading
    print("managed array after the kernel:", m[:4], "... no copy_to_host needed")
else:
    print("CUDA simulator: managed memory needs a GPU (run this on your Spark)")

# %% markdown
# ## 8. Lab (ungraded): the rest of the CUDA toolbox
#
# Nothing in this section is graded. In the simulator the cells run at toy sizes (and are skipped while grading,
# to keep grading fast); on a Spark they run on the GPU. Budget 1.5–2 hours if you do all of it.
#
# ### 8.1 A complete reduction, on the device
# Exercise 3 stops at one partial sum per block and leaves the rest to the host. Two ways to finish on the GPU:
# - **launch again**: your `block_sum` applied to its own output shrinks $n$ values to $\lceil n/64 \rceil$, then
#   to $\lceil n/64^2 \rceil$, … until one is left — all data stays in device memory (`cuda.to_device`,
#   `cuda.device_array`), and only the final number is copied back;
# - **one launch with atomics**: each block adds its sum into a one-element total with `cuda.atomic.add` (one
#   atomic per block is cheap). Below, the block's sum is computed with **warp shuffles** instead of shared
#   memory: `cuda.shfl_down_sync(mask, v, offset)` hands each lane the register `v` of lane `lane + offset`,
#   so 5 steps (offsets 16, 8, 4, 2, 1) sum a warp with no shared memory and no barrier; one shared slot per warp
#   and a last warp-level step finish the block. Numba's CUDA simulator has no warp shuffles, so that kernel runs
#   only on a GPU. Floating-point addition is not associative: the two methods (and the host) round differently.

# %%
def device_sum(x):
    """Sum a float32 array on the device with repeated launches of your block_sum; only the result comes back."""
    d = cuda.to_device(np.asarray(x, np.float32))
    while d.size > 1:
        partial = cuda.device_array(blocks_for(d.size, RBLOCK), np.float32)
        with lab.small_grids_ok():  # the last passes are a few blocks, on purpose
            block_sum[partial.size, RBLOCK](d, partial)
        d = partial
    return float(d.copy_to_host()[0])


if not sc.grading():
    vals = np.random.default_rng(20).standard_normal(300 if SIMULATING else 1 << 24).astype(np.float32)
    try:
        print(f"multi-pass block_sum: {device_sum(vals):.4f}   float64 on the host: {vals.astype(np.float64).sum():.4f}")
    except NotImplementedError:
        print("finish Exercise 3 first")
    if SIMULATING:
        print("warp shuffles: not in Numba's CUDA simulator; on a GPU the next line uses lab.block_sum_shuffle")
    else:
        total = cuda.to_device(np.zeros(1, np.float32))
        lab.block_sum_shuffle[4 * cuda.get_current_device().MULTIPROCESSOR_COUNT, 256](cuda.to_device(vals), total)
        print(f"shuffles + one atomic per block: {total.copy_to_host()[0]:.4f}")
    import inspect

    print(inspect.getsource(lab.block_sum_shuffle))

# %% markdown
# ### 8.2 Prefix sum (scan)
# An inclusive scan turns `x` into `out[i] = x[0] + … + x[i]` — the building block of stream compaction, radix
# sort and of Mamba's selective scan in week 06. Within a block, **Hillis–Steele**: in step $d$ every thread adds
# the value $2^d$ places to its left; $\log_2 64 = 6$ steps. Reading and writing one shared buffer in the same
# step would race (a thread may overwrite a value its right neighbour has not read yet), so the steps alternate
# between two buffers, with a barrier after each. Across blocks: scan each block, scan the block totals (the
# same function, recursively), add to every block the total of the blocks before it. Hillis–Steele does
# $O(n \log n)$ additions; Blelloch's up-sweep/down-sweep does $O(n)$ and is what libraries use.

# %%
SCAN_BLOCK = 64


@cuda.jit
def scan_block(x, out, totals):
    """Inclusive scan of each block's SCAN_BLOCK elements (Hillis-Steele, double-buffered); each block's total."""
    buf = cuda.shared.array((2, SCAN_BLOCK), float32)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    buf[0, t] = x[i] if i < x.size else 0.0
    cuda.syncthreads()
    src = 0
    offset = 1
    while offset < SCAN_BLOCK:
        v = buf[src, t]
        if t >= offset:
            v += buf[src, t - offset]
        buf[1 - src, t] = v
        cuda.syncthreads()
        src = 1 - src
        offset *= 2
    if i < x.size:
        out[i] = buf[src, t]
    if t == SCAN_BLOCK - 1:
        totals[cuda.blockIdx.x] = buf[src, t]


@cuda.jit
def add_block_offsets(out, scanned_totals):
    """Add the total of all earlier blocks to each element of block b > 0."""
    i = cuda.grid(1)
    if cuda.blockIdx.x > 0 and i < out.size:
        out[i] += scanned_totals[cuda.blockIdx.x - 1]


def prefix_sum(d_x):
    """Inclusive scan of a float32 device array, entirely on the device."""
    nb = blocks_for(d_x.size, SCAN_BLOCK)
    out, totals = cuda.device_array(d_x.size, np.float32), cuda.device_array(nb, np.float32)
    with lab.small_grids_ok():  # the recursion ends with a few blocks, on purpose
        scan_block[nb, SCAN_BLOCK](d_x, out, totals)
        if nb > 1:
            add_block_offsets[nb, SCAN_BLOCK](out, prefix_sum(totals))
    return out


if not sc.grading():
    xs = np.random.default_rng(21).standard_normal(300 if SIMULATING else 1 << 20).astype(np.float32)
    got = prefix_sum(cuda.to_device(xs)).copy_to_host()
    err = np.abs(got - np.cumsum(xs.astype(np.float64))).max()
    print(f"scan of {xs.size} values: max error vs np.cumsum {err:.1e}")
    rep_scan = launch(scan_block, 2, SCAN_BLOCK, xs[:128], np.zeros(128, np.float32), np.zeros(2, np.float32))
    print("races in scan_block:", rep_scan.races or "none")

# %% markdown
# ### 8.3 Device functions
# `@cuda.jit(device=True)` makes a function callable **from kernels** (not launchable from the host): it can
# take scalars and arrays and return a value, and the compiler usually inlines it. Use them to name a piece of
# index arithmetic or maths once.

# %%
@cuda.jit(device=True)
def gelu_tanh(v):
    """The tanh approximation of GELU, a device function."""
    return 0.5 * v * (1.0 + math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))


@cuda.jit
def gelu_kernel(x, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = gelu_tanh(x[i])


if not sc.grading():
    xg = np.linspace(-4, 4, 100)
    og = np.zeros_like(xg)
    rep_gelu = launch(gelu_kernel, 2, 32, xg, og)  # on a GPU, the device function travels to the tracer too
    import torch

    want = torch.nn.functional.gelu(torch.tensor(xg), approximate="tanh").numpy()
    print(f"GELU (tanh) vs torch: max error {np.abs(og - want).max():.1e}; "
          f"efficiency {rep_gelu.global_efficiency():.2f}")

# %% markdown
# ### 8.4 GPU ufuncs: `@vectorize(target="cuda")`
# For element-wise maths you need not write the indexing at all: `numba.vectorize` with `target="cuda"`
# compiles a scalar function into a NumPy-style ufunc that runs on the GPU, with broadcasting. Give it the
# signatures to compile. Called on numpy arrays it copies them to the device and back on every call (the same
# implicit transfers as a kernel, 8.5); called on device arrays it returns a device array. Numba's CUDA simulator
# cannot build CUDA ufuncs, so this cell runs only on a GPU.

# %%
if SIMULATING:
    print("CUDA simulator: @vectorize(target='cuda') needs a GPU (run this on your Spark)")
else:
    from numba import vectorize

    @vectorize(["float32(float32, float32, float32)"], target="cuda")
    def axpy_ufunc(a, x, y):
        return a * x + y

    xu = cuda.to_device(np.arange(1 << 20, dtype=np.float32))
    yu = cuda.to_device(np.ones(1 << 20, np.float32))
    res = axpy_ufunc(np.float32(2.0), xu, yu)  # device arrays in, a device array out: no copies
    print(type(res).__name__, res.copy_to_host()[:4])

# %% markdown
# ### 8.5 Host ↔ device transfers, made explicit
# Pass a **numpy** array to a kernel and numba silently copies it to the device before the launch and back
# after it — every array, every launch, whether or not the kernel wrote it — and warns
# (`NumbaPerformanceWarning: Host array used in CUDA kernel will incur copy overhead`). Do it yourself instead:
# `cuda.to_device(x)` once, `cuda.device_array(shape, dtype)` for outputs (no copy at all), launch as often as you
# like, `d.copy_to_host()` once at the end. `launch` in this notebook does exactly that (see
# `sparkcourse/labs/w01_cuda_numba.py`), which is why the tests show no such warning; it also silences the other
# warning, "Grid size N will likely result in GPU under-utilization": the tests' grids are tiny on purpose.
# On a discrete GPU each copy crosses PCIe (about 64 GB/s, section 7); on a Spark it stays in the one pool but
# still reads and writes every byte once more.

# %%
if not sc.grading():
    n_t = 301 if SIMULATING else 1 << 24
    xt, yt = np.random.default_rng(22).random(n_t), np.random.default_rng(23).random(n_t)
    d_x, d_y, d_out = cuda.to_device(xt), cuda.to_device(yt), cuda.device_array(n_t)
    try:
        saxpy[blocks_for(n_t, 256), 256](2.0, d_x, d_y, d_out)  # device arrays: no copies
        print("explicit transfers: max error", np.abs(d_out.copy_to_host() - (2.0 * xt + yt)).max())
        if not SIMULATING:
            import time
            import warnings

            from numba.core.errors import NumbaPerformanceWarning

            host_out = np.zeros(n_t)
            for label, args in (("numpy arrays (implicit copies)", (xt, yt, host_out)),
                                ("device arrays", (d_x, d_y, d_out))):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NumbaPerformanceWarning)
                    saxpy[blocks_for(n_t, 256), 256](2.0, *args)  # compile and warm up
                    cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(10):
                        saxpy[blocks_for(n_t, 256), 256](2.0, *args)
                    cuda.synchronize()
                print(f"10 launches with {label:32s}: {(time.perf_counter() - t0) * 1e3:8.2f} ms")
    except NotImplementedError:
        print("finish Exercise 1 first")

# %% markdown
# ### 8.6 Streams
# Kernel launches and `to_device`/`copy_to_host` calls are queued on a **stream** and run in order; work on
# *different* streams may overlap. The classic use on a discrete GPU: cut the data into chunks and, on two
# streams, copy chunk $k+1$ in while chunk $k$ computes. Copies only overlap when the host buffer is **pinned**
# (`cuda.pinned_array`: page-locked, so the copy engine can read it directly). On a Spark there is no PCIe copy to
# hide, and streams matter for overlapping independent kernels instead. Pattern (runs on a GPU):
# ```python
# streams = [cuda.stream(), cuda.stream()]
# host = cuda.pinned_array(n, np.float32); host[:] = data
# for k, chunk in enumerate(np.array_split(np.arange(n), 8)):
#     s = streams[k % 2]
#     d = cuda.to_device(host[chunk[0]:chunk[-1] + 1], stream=s)
#     kernel[blocks, threads, s](d)
#     d.copy_to_host(host[chunk[0]:chunk[-1] + 1], stream=s)
# for s in streams:
#     s.synchronize()
# ```

# %%
if not SIMULATING and not sc.grading():
    import time

    n_s = 1 << 24
    host = cuda.pinned_array(n_s, np.float32)
    host[:] = 1.0
    streams = [cuda.stream(), cuda.stream()]
    for label, n_chunks in (("one chunk, one stream", 1), ("8 chunks on 2 streams", 8)):
        t0 = time.perf_counter()
        for k, chunk in enumerate(np.array_split(np.arange(n_s), n_chunks)):
            s, part = streams[k % 2], slice(int(chunk[0]), int(chunk[-1]) + 1)
            d = cuda.to_device(host[part], stream=s)
            scale_inplace[256, 256, s](d, np.float32(1.0))
            d.copy_to_host(host[part], stream=s)
        for s in streams:
            s.synchronize()
        print(f"{label:24s}: {(time.perf_counter() - t0) * 1e3:7.2f} ms (copy in, scale, copy out)")
else:
    print("streams: the timed comparison runs on a GPU")

# %% markdown
# ### 8.7 Occupancy
# An SM holds a limited number of threads, blocks, registers and shared memory at once; **occupancy** is the
# fraction of its maximum warps a kernel keeps resident. More resident warps hide more memory latency (up to a
# point: the register-blocked matmul in 8.9 trades occupancy for registers and wins). The limits below are those
# of compute capability 9.0 (H100/H200) in NVIDIA's *CUDA C++ Programming Guide* (table "Technical
# Specifications per Compute Capability"): 2048 threads, 32 blocks, 65,536 registers and 228 KB shared memory per
# SM, registers allocated per warp in units of 256. On a GPU the next cell reads your device's own limits, and 8.9
# prints the register count the compiler chose for the register-blocked kernel.

# %%
def occupancy(threads, regs_per_thread, smem_per_block, max_threads=2048, max_blocks=32, regs=65536,
              smem=228 * 1024):
    """Fraction of the SM's warps resident for a kernel, and which limit binds."""
    warps = -(-threads // 32)
    regs_per_block = warps * 256 * -(-regs_per_thread * 32 // 256)
    limits = {"threads": max_threads // (warps * 32), "blocks": max_blocks,
              "registers": regs // regs_per_block if regs_per_block else max_blocks,
              "shared memory": smem // smem_per_block if smem_per_block else max_blocks}
    blocks = min(limits.values())
    return blocks * warps * 32 / max_threads, min(limits, key=limits.get)


print("assumed registers per thread (ptxas reports the real count on a GPU):")
for name, threads, r, sm_bytes in (("tiled matmul 16x16", 256, 32, 2 * 16 * 16 * 4),
                                   ("register-blocked 64x64, 4x4/thread", 256, 64, (64 * 16 + 16 * 64) * 4),
                                   ("same, if it needed 128 registers", 256, 128, (64 * 16 + 16 * 64) * 4)):
    occ, limit = occupancy(threads, r, sm_bytes)
    print(f"  {name:36s} {r:4d} regs: occupancy {occ:.2f} (limited by {limit})")
if not SIMULATING:
    dev = cuda.get_current_device()
    print(f"this GPU: {dev.MAX_THREADS_PER_MULTIPROCESSOR} threads, {dev.MAX_REGISTERS_PER_MULTIPROCESSOR} registers, "
          f"{dev.MAX_SHARED_MEMORY_PER_MULTIPROCESSOR // 1024} KB shared memory per SM (8.9 prints the "
          "register-blocked kernel's register count)")

# %% markdown
# ### 8.8 Profiling: the roofline, and Nsight Compute
# A kernel that does $F$ floating-point operations and moves $Q$ bytes of DRAM traffic has **arithmetic
# intensity** $I = F/Q$. It cannot run faster than $\min(P, I \cdot B)$ for peak compute $P$ and bandwidth
# $B$: the **roofline**. Below the ridge point $P/B$ a kernel is bandwidth-bound (copies, transposes,
# histograms, decoding an LLM at batch 1), above it compute-bound (large matmuls). The plot uses the H200
# ceilings measured in `benchmarks/cuda_numba_h200.md` (2026-11-27): 4050 GB/s copy, 50.9 TFLOP/s cuBLAS fp32.
# On a Spark, measure both in section 9 and redraw: its ~273 GB/s moves the ridge far to the right.

# %%
if not sc.grading():
    P, Bw = 50.9e12, 4050e9
    intensity = np.logspace(-2, 4, 200)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.loglog(intensity, np.minimum(P, intensity * Bw) / 1e12, "k-", label="roofline (H200, measured ceilings)")
    M4 = 4096
    for label, flop, q in (("copy", 0, 8), ("naive matmul, K from DRAM", 2.0, 8.0),
                           ("tiled 16x16: each A, B element read by 16 outputs", 2 * 16, 8),
                           ("ideal 4096³ matmul: A, B, C once", 2 * M4**3, 3 * M4 * M4 * 4)):
        if flop:
            ax.axvline(flop / q, ls=":", lw=1)
            ax.text(flop / q, 1e-2, " " + label, rotation=90, fontsize=7, va="bottom")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable TFLOP/s")
    ax.set_title(f"ridge point at {P / Bw:.1f} FLOP/byte", fontsize=9)
    plt.tight_layout()
    plt.show()

# %% markdown
# **Nsight Compute** (`ncu`) measures what the tracer models, on the hardware. Not run here (no profiler was
# available when this notebook was written); on your Spark, put the kernels in a script and run:
# ```bash
# # sectors and requests of global loads/stores (sectors per request: 4 = coalesced float32), shared-memory bank
# # conflicts, DRAM bytes, time, achieved occupancy
# ncu --kernel-name regex:'transpose|matmul' --metrics \
# l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,\
# l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum,l1tex__t_requests_pipe_lsu_mem_global_op_st.sum,\
# l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,\
# dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active \
# python my_kernels.py
# # the roofline chart, memory tables and occupancy, as sections
# ncu --section SpeedOfLight_RooflineChart --section MemoryWorkloadAnalysis --section Occupancy \
#     -o week01 python my_kernels.py        # open week01.ncu-rep in the Nsight Compute GUI
# ```
# Numba names kernels after the Python function (mangled); `--kernel-name regex:` matches a part of it.
# `nsys profile -t cuda python my_kernels.py` shows the timeline instead: copies, launches, streams (8.6).

# %% markdown
# ### 8.9 A register-blocked matmul
# The tiled kernel of Exercise 5 does two shared-memory loads per multiply-add: shared memory, not DRAM,
# becomes the limit. **Register blocking** makes each thread compute a small **micro-tile** of $C$ — here
# 4 × 4 — so that per step of $k$ it loads 4 values of $A$ and 4 of $B$ into registers and does 16 multiply-adds:
# 8 loads for 16 FMAs instead of 32. A block of 16 × 16 threads then covers a 64 × 64 tile of $C$, staging
# 64 × 16 and 16 × 64 slices of $A$ and $B$ in shared memory (each thread loads 4 elements of each, coalesced).
# The price: 16 accumulators and 8 operands per thread, so more registers and lower occupancy (8.7). On an H200
# the 16 × 16 tiled kernel reached 0.145 of cuBLAS fp32 (`benchmarks/cuda_numba_h200.md`, 2026-11-27);
# `benchmarks/cuda_numba.py` and section 9 now time this kernel next to it. The kernel is
# `lab.matmul_regblock`; read it, then check it below.

# %%
import inspect

print(inspect.getsource(lab.matmul_regblock))
if not sc.grading():
    Ar = np.random.default_rng(24).standard_normal((40, 19)).astype(np.float32)
    Br = np.random.default_rng(25).standard_normal((19, 37)).astype(np.float32)
    Cr = np.zeros((40, 37), np.float32)
    grid_r, block_r = lab.regblock_grid(40, 37)
    if SIMULATING:
        lab.matmul_regblock[grid_r, block_r](Ar, Br, Cr)
    else:
        lab.run_on_device(lab.matmul_regblock, grid_r, block_r, Ar, Br, Cr)
        try:  # numba-cuda: registers per thread of the compiled kernel (for 8.7's occupancy)
            print("registers per thread as compiled:", lab.matmul_regblock.get_regs_per_thread())
        except Exception as exc:  # an older numba names it differently: the count is a nicety
            print(f"(register count unavailable: {type(exc).__name__})")
    print(f"register-blocked 40x19 @ 19x37: max error {np.abs(Cr - Ar.astype(np.float64) @ Br).max():.1e}")

# %% markdown
# ## 9. On your Spark: timings (ungraded)
# In the `spark` profile this section times **your** kernels at full size with CUDA events — device arrays
# throughout, so no launch copies anything — and reports each as a **ratio to a ceiling measured in the same
# run**: torch's device-to-device copy for bandwidth, cuBLAS (`torch.matmul`, TF32 off) for FLOP/s. It uses the
# same sizes and harness (`lab.run_benchmarks`) as `benchmarks/cuda_numba.py`, the script with which the course's
# own kernels were measured (it needs the instructors' reference kernels, so you run this cell instead).
# Nothing here is graded. For reference, the course's kernels measured on an **H200** (not a Spark;
# numba-cuda 0.30.4), two runs — `benchmarks/cuda_numba_h200.md` (2026-11-27) /
# `benchmarks/cuda_numba_h200_run2.md` (2026-11-29): torch's copy 4050 / 3975 GB/s; coalesced copy 0.60 / 0.62
# of it moving 4 bytes per thread and 0.82 / 0.77 moving 16; stride-33 copy 0.057 / 0.047 of it in useful
# bytes (section 2: the sector model's 0.125 is an upper bound); transpose naive 532 / 524 GB/s, tiled
# 2121 / 1993 GB/s; 256-bin histogram over 64M ints with global atomics 15 / 15.5 GB/s vs privatised
# 2181 / 2161 GB/s; 4096³ fp32 matmul naive 1.31 / 1.31 TFLOP/s, 16 × 16 tiles 7.41 / 7.39, cuBLAS 50.9 / 51.0.
# Your Spark's ceiling is its ~273 GB/s pool: measure it. Expect about a minute.

# %%
if profile.is_spark and not SIMULATING:
    mine = {name: globals().get(name) for name in ("copy_coalesced", "strided_copy", "transpose_naive",
                                                   "transpose_tiled", "hist_global", "hist_shared", "matmul_naive",
                                                   "matmul_tiled")}
    bench = lab.run_benchmarks(mine, tiny=False, repeats=10)
    print("\n".join(lab.markdown_rows(bench)))
else:
    print("tiny profile: the timings run on a GPU (profile spark)")

# %% markdown
# ## Wrap-up
# - Index with `cuda.grid`, round the grid up, **bounds-check**; a grid-stride loop fits any grid to any $n$.
# - A warp's request costs 32-byte sectors: stride 2 halves efficiency, stride ≥ 8 float32 (33 here) gives
#   **0.125** — 1/8 of the bandwidth. Stage through shared memory to make both sides coalesced.
# - 32 banks × 4 bytes: pad a 32-wide tile to 33 to read its columns without conflicts.
# - Every barrier-separated phase of a shared-memory algorithm needs `cuda.syncthreads()`; concurrent updates of
#   one location need atomics; privatise hot atomics in shared memory.
# - On a Spark: one 128 GB pool at ~273 GB/s for CPU and GPU — large models fit, no PCIe copies, and bandwidth
#   is the budget (a 112.5 GB model reads in about 0.41 s).
#
# **Read more:** NVIDIA, *CUDA C++ Best Practices Guide* (coalesced access, shared memory and bank conflicts);
# M. Harris, *An Efficient Matrix Transpose in CUDA C/C++* (NVIDIA blog, 2013) and *Optimizing Parallel
# Reduction in CUDA* (2007); Numba documentation, *CUDA Python* (kernels, shared memory, atomics, the simulator);
# NVIDIA DGX Spark product page (128 GB unified LPDDR5x, 273 GB/s); NVIDIA H100 datasheet (80 GB HBM3, 3.35 TB/s).
