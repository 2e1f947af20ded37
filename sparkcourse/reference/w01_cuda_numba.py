"""Reference kernels for week 01 (CUDA Python with Numba); instructor-only, used by hidden tests and benchmarks.

Import after ``sparkcourse.gpu.setup_numba()``: the module imports ``numba.cuda``. One ``cuda.shared.array``
per source line (the CUDA simulator keys shared allocations by line).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, int32

WARP = 32
SECTOR = 32
TILE = 32  # transpose: TILE x TILE tiles ...
TILE_PAD = 33  # TILE + 1 as a literal: shared shapes must be compile-time constants on a GPU
ROWS = 8  # ... moved by blocks of TILE x ROWS threads
RBLOCK = 64  # threads per block of the reduction
NBINS = 256  # histogram bins
MM_TILE = 16  # matmul tiles and blocks: MM_TILE x MM_TILE
EMB_BLOCK = (32, 4)  # embedding: x over the embedding dimension, y over tokens


def blocks_for(n: int, block: int) -> int:
    """Blocks of ``block`` threads needed to cover ``n`` items."""
    return -(-n // block)


def is_kernel(obj: object) -> bool:
    """True for a ``cuda.jit`` kernel (simulator or GPU), False for a host function."""
    return type(obj) is type(saxpy)


# 1. Indexing


@cuda.jit
def saxpy(a, x, y, out):
    """out = a * x + y, one element per thread."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + y[i]


@cuda.jit
def saxpy_gridstride(a, x, y, out):
    """out = a * x + y with a grid-stride loop: any grid covers any n."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, out.size, stride):
        out[i] = a * x[i] + y[i]


# 2. Coalescing and the transpose


@cuda.jit
def copy_coalesced(a, out):
    """out[i] = a[i] with a grid-stride loop: neighbouring threads touch neighbouring elements."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, out.size, stride):
        out[i] = a[i]


@cuda.jit
def strided_copy(a, out, stride):
    """out[i] = a[i * stride] (grid-stride loop): a warp's reads are ``stride`` elements apart."""
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, out.size, step):
        out[i] = a[i * stride]


def warp_efficiency(stride: int, itemsize: int) -> float:
    """Sector efficiency of one full warp reading element ``lane * stride`` of an aligned array."""
    lanes = np.arange(WARP)
    touched = len(np.unique(lanes * stride * itemsize // SECTOR))
    ideal = math.ceil(WARP * itemsize / SECTOR)
    return ideal / touched


@cuda.jit
def transpose_naive(a, out):
    """out[j, i] = a[i, j]; x indexes columns of ``a``: coalesced reads, strided writes."""
    x, y = cuda.grid(2)
    if y < a.shape[0] and x < a.shape[1]:
        out[x, y] = a[y, x]


@cuda.jit
def transpose_tiled(a, out):
    """Transpose through a padded TILE x (TILE + 1) shared tile: coalesced both ways, no bank conflicts."""
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


def transpose_grid(shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) of the tiled transpose of an array of ``shape``."""
    return (blocks_for(shape[1], TILE), blocks_for(shape[0], TILE)), (TILE, ROWS)


# 3. Reduction


@cuda.jit
def block_sum(x, partial):
    """partial[b] = sum of block b's RBLOCK elements of x: a tree in shared memory, sequential addressing."""
    s = cuda.shared.array(RBLOCK, float32)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    s[t] = x[i] if i < x.size else 0.0
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if t < stride:
            s[t] += s[t + stride]
        cuda.syncthreads()
        stride //= 2
    if t == 0:
        partial[cuda.blockIdx.x] = s[0]


# 4. Histogram


@cuda.jit
def hist_global(data, bins):
    """bins[v] += 1 for every value, with global atomics (grid-stride)."""
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, data.size, step):
        cuda.atomic.add(bins, data[i], 1)


@cuda.jit
def hist_shared(data, bins):
    """Privatised histogram: each block counts in shared memory, then adds its NBINS counts to ``bins``."""
    h = cuda.shared.array(NBINS, int32)
    t = cuda.threadIdx.x
    for b in range(t, NBINS, cuda.blockDim.x):
        h[b] = 0
    cuda.syncthreads()
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for i in range(start, data.size, step):
        cuda.atomic.add(h, data[i], 1)
    cuda.syncthreads()
    for b in range(t, NBINS, cuda.blockDim.x):
        if h[b] > 0:
            cuda.atomic.add(bins, b, h[b])


# 5. Matrix multiplication


@cuda.jit
def matmul_naive(A, B, C):
    """C = A @ B, one output per thread reading a row of A and a column of B from global memory."""
    col, row = cuda.grid(2)
    if row < C.shape[0] and col < C.shape[1]:
        acc = 0.0
        for k in range(A.shape[1]):
            acc += A[row, k] * B[k, col]
        C[row, col] = acc


@cuda.jit
def matmul_tiled(A, B, C):
    """C = A @ B through MM_TILE x MM_TILE shared tiles (zero-filled at the edges)."""
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


def matmul_grid(m: int, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) for an m x n output with MM_TILE x MM_TILE blocks."""
    return (blocks_for(n, MM_TILE), blocks_for(m, MM_TILE)), (MM_TILE, MM_TILE)


# 6. Embedding lookup


@cuda.jit
def embedding_forward(weight, ids, out):
    """out[t, :] = weight[ids[t], :]; x runs along the embedding dimension (coalesced rows)."""
    j, t = cuda.grid(2)
    if t < ids.size and j < weight.shape[1]:
        out[t, j] = weight[ids[t], j]


@cuda.jit
def embedding_backward(grad_out, ids, grad_weight):
    """grad_weight[ids[t], :] += grad_out[t, :], atomically: repeated ids add up."""
    j, t = cuda.grid(2)
    if t < ids.size and j < grad_out.shape[1]:
        cuda.atomic.add(grad_weight, (ids[t], j), grad_out[t, j])


def embedding_grid(n_tokens: int, dim: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) covering dim (x) by n_tokens (y)."""
    return (blocks_for(dim, EMB_BLOCK[0]), blocks_for(n_tokens, EMB_BLOCK[1])), EMB_BLOCK


# 7. Unified memory: a decode-step time model


def decode_seconds(model_bytes: float, device_bytes: float, device_bw: float, link_bw: float) -> float:
    """Seconds to read every weight once: the resident part at device bandwidth, the rest over the link."""
    resident = min(model_bytes, device_bytes)
    return resident / device_bw + max(0.0, model_bytes - device_bytes) / link_bw
