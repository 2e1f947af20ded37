# Plausible mistakes for 01-cuda-numba (see tests/test_mutants.py for the format).

# %% mutant name=saxpy_no_bounds_check cell=saxpy fails=test_saxpy
delete if i < out.size:
replace <<<
        out[i] = a * x[i] + y[i]
===
    out[i] = a * x[i] + y[i]
>>>

# %% mutant name=saxpy_block_index_only cell=saxpy fails=test_saxpy
replace i = cuda.grid(1) => i = cuda.threadIdx.x

# %% mutant name=saxpy_on_the_host cell=saxpy fails=test_saxpy
delete @cuda.jit
delete i = cuda.grid(1)
delete if i < out.size:
replace <<<
        out[i] = a * x[i] + y[i]
===
    out[:] = a * x + y
>>>

# %% mutant name=gridstride_blocked_chunks_uncoalesced cell=saxpy_gridstride fails=test_saxpy_gridstride
replace start = cuda.grid(1) => i = cuda.grid(1)
replace stride = cuda.gridsize(1) => threads = cuda.gridsize(1)
replace <<<
    for i in range(start, out.size, stride):
===
    chunk = (out.size + threads - 1) // threads
    for k in range(i * chunk, min((i + 1) * chunk, out.size)):
>>>
replace out[i] = a * x[i] + y[i] => out[k] = a * x[k] + y[k]

# %% mutant name=gridstride_strides_by_block cell=saxpy_gridstride fails=test_saxpy_gridstride
delete start = cuda.grid(1)
delete stride = cuda.gridsize(1)
replace for i in range(start, out.size, stride): => for i in range(cuda.grid(1), out.size, cuda.blockDim.x):

# %% mutant name=efficiency_one_over_stride cell=warp_efficiency fails=test_warp_efficiency
replace <<<
    """Sector efficiency of one full warp reading element lane * stride (sector-aligned array)."""
    sectors = {lane * stride * itemsize // 32 for lane in range(32)}
    ideal = math.ceil(32 * itemsize / 32)
    return ideal / len(sectors)
===
    return 1.0 / stride
>>>

# %% mutant name=efficiency_ignores_itemsize cell=warp_efficiency fails=test_warp_efficiency
delete """Sector efficiency of one full warp reading element lane * stride (sector-aligned array)."""
replace sectors = {lane * stride * itemsize // 32 for lane in range(32)} => sectors = {lane * stride * 4 // 32 for lane in range(32)}
delete ideal = math.ceil(32 * itemsize / 32)
replace return ideal / len(sectors) => return 4 / len(sectors)

# %% mutant name=strided_copy_wrong_side cell=strided_copy fails=test_strided_copy
replace out[i] = a[i * stride] => out[i] = a[i] * stride

# %% mutant name=naive_transpose_swapped_bounds cell=transpose_naive fails=test_transpose_naive
replace if y < a.shape[0] and x < a.shape[1]: => if x < a.shape[0] and y < a.shape[1]:

# %% mutant name=tiled_transpose_unpadded cell=transpose_tiled fails=test_transpose_tiled
replace tile = cuda.shared.array((TILE, TILE_PAD), float32) => tile = cuda.shared.array((TILE, TILE), float32)

# %% mutant name=tiled_transpose_missing_barrier cell=transpose_tiled fails=test_transpose_tiled
replace tile = cuda.shared.array((TILE, TILE_PAD), float32) => tile = cuda.shared.array((TILE, TILE + 1), float32)
delete cuda.syncthreads()

# %% mutant name=tiled_transpose_uncoalesced_writes cell=transpose_tiled fails=test_transpose_tiled
replace tile = cuda.shared.array((TILE, TILE_PAD), float32) => tile = cuda.shared.array((TILE, TILE + 1), float32)
delete x = cuda.blockIdx.y * TILE + tx
delete y = cuda.blockIdx.x * TILE + ty
replace if x < out.shape[1] and y + j < out.shape[0]: => if x < a.shape[1] and y + j < a.shape[0]:
replace out[y + j, x] = tile[tx, ty + j] => out[x, y + j] = tile[ty + j, tx]

# %% mutant name=reduction_missing_barrier cell=block_sum fails=test_block_sum
replace <<<
        cuda.syncthreads()
===
>>>

# %% mutant name=reduction_no_bounds cell=block_sum fails=test_block_sum
replace i = cuda.grid(1) => s[t] = x[cuda.grid(1)]
delete s[t] = x[i] if i < x.size else 0.0

# %% variant name=reduction_interleaved_variant cell=block_sum
@cuda.jit
def block_sum(x, partial):
    buf = cuda.shared.array(RBLOCK, float32)
    t = cuda.threadIdx.x
    i = cuda.blockIdx.x * cuda.blockDim.x + t
    buf[t] = 0.0
    if i < x.size:
        buf[t] = x[i]
    cuda.syncthreads()
    s = 1
    while s < RBLOCK:
        if t % (2 * s) == 0:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s *= 2
    if t == 0:
        partial[cuda.blockIdx.x] = buf[0]

# %% mutant name=histogram_not_atomic cell=hist_global fails=test_hist_global
replace <<<
        cuda.atomic.add(bins, data[i], 1)
===
        bins[data[i]] += 1
>>>

# %% mutant name=private_histogram_not_atomic cell=hist_shared fails=test_hist_shared
replace <<<
        cuda.atomic.add(h, data[i], 1)
===
        h[data[i]] += 1
>>>

# %% mutant name=private_histogram_flush_without_barrier cell=hist_shared fails=test_hist_shared
replace <<<
        cuda.atomic.add(h, data[i], 1)
    cuda.syncthreads()
===
        cuda.atomic.add(h, data[i], 1)
>>>

# %% mutant name=private_histogram_is_really_global cell=hist_shared fails=test_hist_shared
replace <<<
    h = cuda.shared.array(NBINS, int32)
    t = cuda.threadIdx.x
    for b in range(t, NBINS, cuda.blockDim.x):
        h[b] = 0
    cuda.syncthreads()
===
>>>
replace cuda.atomic.add(h, data[i], 1) => cuda.atomic.add(bins, data[i], 1)
delete cuda.syncthreads()
delete for b in range(t, NBINS, cuda.blockDim.x):
delete cuda.atomic.add(bins, b, h[b])

# %% variant name=private_histogram_one_thread_flushes_variant cell=hist_shared
@cuda.jit
def hist_shared(data, bins):
    counts = cuda.shared.array(NBINS, int32)
    t = cuda.threadIdx.x
    b = t
    while b < NBINS:
        counts[b] = 0
        b += cuda.blockDim.x
    cuda.syncthreads()
    i = cuda.grid(1)
    while i < data.size:
        cuda.atomic.add(counts, data[i], 1)
        i += cuda.gridsize(1)
    cuda.syncthreads()
    if t == 0:
        for k in range(NBINS):
            if counts[k] != 0:
                cuda.atomic.add(bins, k, counts[k])

# %% mutant name=matmul_missing_second_barrier cell=matmul_tiled fails=test_matmul_tiled
replace <<<
            acc += sA[ty, k] * sB[k, tx]
        cuda.syncthreads()
===
            acc += sA[ty, k] * sB[k, tx]
>>>

# %% mutant name=matmul_no_zero_fill cell=matmul_tiled fails=test_matmul_tiled
replace sA[ty, tx] = A[row, k0 + tx] if row < A.shape[0] and k0 + tx < A.shape[1] else 0.0 => if row < A.shape[0] and k0 + tx < A.shape[1]:
replace <<<
        if row < A.shape[0] and k0 + tx < A.shape[1]:
===
        if row < A.shape[0] and k0 + tx < A.shape[1]:
            sA[ty, tx] = A[row, k0 + tx]
>>>
replace sB[ty, tx] = B[k0 + ty, col] if k0 + ty < B.shape[0] and col < B.shape[1] else 0.0 => if k0 + ty < B.shape[0] and col < B.shape[1]:
replace <<<
        if k0 + ty < B.shape[0] and col < B.shape[1]:
===
        if k0 + ty < B.shape[0] and col < B.shape[1]:
            sB[ty, tx] = B[k0 + ty, col]
>>>

# %% mutant name=matmul_naive_in_disguise cell=matmul_tiled fails=test_matmul_tiled
replace <<<
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
===
    col, row = cuda.grid(2)
>>>
replace <<<
    if row < C.shape[0] and col < C.shape[1]:
===
    if row < C.shape[0] and col < C.shape[1]:
        acc = 0.0
        for k in range(A.shape[1]):
            acc += A[row, k] * B[k, col]
>>>

# %% mutant name=embedding_backward_not_atomic cell=embedding fails=test_embedding_backward
replace cuda.atomic.add(grad_weight, (ids[t], j), grad_out[t, j]) => grad_weight[ids[t], j] += grad_out[t, j]

# %% mutant name=embedding_backward_overwrites cell=embedding fails=test_embedding_backward
replace cuda.atomic.add(grad_weight, (ids[t], j), grad_out[t, j]) => grad_weight[ids[t], j] = grad_out[t, j]

# %% mutant name=embedding_indexes_weight_by_position cell=embedding fails=test_embedding_forward
replace out[t, j] = weight[ids[t], j] => out[t, j] = weight[t % weight.shape[0], j]

# %% mutant name=decode_all_at_link_speed cell=decode_seconds fails=test_decode_seconds
delete """Seconds per full read of the weights: resident bytes at device bandwidth, the rest over the link."""
replace <<<
    return device_bytes / device_bw + (model_bytes - device_bytes) / link_bw
===
    return model_bytes / link_bw
>>>

# %% variant name=decode_seconds_variant cell=decode_seconds
def decode_seconds(model_bytes, device_bytes, device_bw, link_bw):
    spill = max(model_bytes - device_bytes, 0)
    return (model_bytes - spill) / device_bw + spill / link_bw

# ---- correct answers written differently (#14.6): each must score full marks ----

# %% variant name=saxpy_explicit_index_early_return_variant cell=saxpy
@cuda.jit
def saxpy(a, x, y, out):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if i >= x.shape[0]:
        return
    out[i] = a * x[i] + y[i]

# %% variant name=gridstride_while_loop_variant cell=saxpy_gridstride
@cuda.jit
def saxpy_gridstride(a, x, y, out):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    step = cuda.blockDim.x * cuda.gridDim.x
    while i < x.shape[0]:
        out[i] = a * x[i] + y[i]
        i += step

# %% variant name=strided_copy_gridstride_variant cell=strided_copy
@cuda.jit
def strided_copy(a, out, stride):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = a[stride * i]

# %% variant name=efficiency_closed_form_variant cell=warp_efficiency
def warp_efficiency(stride, itemsize):
    gap = stride * itemsize  # bytes between neighbouring lanes; aligned elements never straddle a sector
    touched = 32 if gap >= 32 else (31 * gap) // 32 + 1
    needed = math.ceil(32 * itemsize / 32)
    return needed / touched

# %% variant name=naive_transpose_manual_indices_variant cell=transpose_naive
@cuda.jit
def transpose_naive(a, out):
    col = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    row = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    if row >= a.shape[0] or col >= a.shape[1]:
        return
    out[col, row] = a[row, col]

# %% variant name=tiled_transpose_transposes_on_the_way_in_variant cell=transpose_tiled
@cuda.jit
def transpose_tiled(a, out):
    tile = cuda.shared.array((TILE, TILE_PAD), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockIdx.x * TILE
    by = cuda.blockIdx.y * TILE
    j = 0
    while j < TILE:
        if by + ty + j < a.shape[0] and bx + tx < a.shape[1]:
            tile[tx, ty + j] = a[by + ty + j, bx + tx]  # a column of the padded tile: banks (33 tx + r) % 32
        j += ROWS
    cuda.syncthreads()
    j = 0
    while j < TILE:
        if bx + ty + j < out.shape[0] and by + tx < out.shape[1]:
            out[bx + ty + j, by + tx] = tile[ty + j, tx]
        j += ROWS

# %% variant name=histogram_gridstride_variant cell=hist_global
@cuda.jit
def hist_global(data, bins):
    i = cuda.grid(1)
    while i < data.shape[0]:
        cuda.atomic.add(bins, data[i], 1)
        i += cuda.gridsize(1)

# %% variant name=matmul_tile_count_and_transposed_b_tile_variant cell=matmul_tiled
@cuda.jit
def matmul_tiled(A, B, C):
    a_tile = cuda.shared.array((MM_TILE, MM_TILE), float32)
    b_tile = cuda.shared.array((MM_TILE, MM_TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    i = cuda.blockIdx.y * cuda.blockDim.y + ty
    j = cuda.blockIdx.x * cuda.blockDim.x + tx
    total = float32(0.0)
    for t in range((A.shape[1] + MM_TILE - 1) // MM_TILE):
        k = t * MM_TILE
        if i < A.shape[0] and k + tx < A.shape[1]:
            a_tile[ty, tx] = A[i, k + tx]
        else:
            a_tile[ty, tx] = 0.0
        if k + ty < B.shape[0] and j < B.shape[1]:
            b_tile[tx, ty] = B[k + ty, j]  # stored transposed
        else:
            b_tile[tx, ty] = 0.0
        cuda.syncthreads()
        for kk in range(MM_TILE):
            total += a_tile[ty, kk] * b_tile[tx, kk]
        cuda.syncthreads()
    if i < C.shape[0] and j < C.shape[1]:
        C[i, j] = total

# %% variant name=embedding_gridstride_2d_variant cell=embedding
@cuda.jit
def embedding_forward(weight, ids, out):
    x0, t0 = cuda.grid(2)
    sx, st = cuda.gridsize(2)
    for t in range(t0, ids.shape[0], st):
        row = ids[t]
        for j in range(x0, out.shape[1], sx):
            out[t, j] = weight[row, j]


@cuda.jit
def embedding_backward(grad_out, ids, grad_weight):
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    t = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    if t >= ids.shape[0] or j >= grad_weight.shape[1]:
        return
    row = ids[t]
    cuda.atomic.add(grad_weight, (row, j), grad_out[t, j])
