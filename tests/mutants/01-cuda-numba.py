# Plausible mistakes for 01-cuda-numba (see tests/test_mutants.py for the format).

# %% mutant name=saxpy_no_bounds_check cell=saxpy fails=test_saxpy
@cuda.jit
def saxpy(a, x, y, out):
    i = cuda.grid(1)
    out[i] = a * x[i] + y[i]

# %% mutant name=saxpy_block_index_only cell=saxpy fails=test_saxpy
@cuda.jit
def saxpy(a, x, y, out):
    i = cuda.threadIdx.x
    if i < out.size:
        out[i] = a * x[i] + y[i]

# %% mutant name=saxpy_on_the_host cell=saxpy fails=test_saxpy
def saxpy(a, x, y, out):
    out[:] = a * x + y

# %% mutant name=gridstride_blocked_chunks_uncoalesced cell=saxpy_gridstride fails=test_saxpy_gridstride
@cuda.jit
def saxpy_gridstride(a, x, y, out):
    i = cuda.grid(1)
    threads = cuda.gridsize(1)
    chunk = (out.size + threads - 1) // threads
    for k in range(i * chunk, min((i + 1) * chunk, out.size)):
        out[k] = a * x[k] + y[k]

# %% mutant name=gridstride_strides_by_block cell=saxpy_gridstride fails=test_saxpy_gridstride
@cuda.jit
def saxpy_gridstride(a, x, y, out):
    for i in range(cuda.grid(1), out.size, cuda.blockDim.x):
        out[i] = a * x[i] + y[i]

# %% mutant name=efficiency_one_over_stride cell=warp_efficiency fails=test_warp_efficiency
def warp_efficiency(stride, itemsize):
    return 1.0 / stride

# %% mutant name=efficiency_ignores_itemsize cell=warp_efficiency fails=test_warp_efficiency
def warp_efficiency(stride, itemsize):
    sectors = {lane * stride * 4 // 32 for lane in range(32)}
    return 4 / len(sectors)

# %% mutant name=strided_copy_wrong_side cell=strided_copy fails=test_strided_copy
@cuda.jit
def strided_copy(a, out, stride):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] * stride

# %% mutant name=naive_transpose_swapped_bounds cell=transpose_naive fails=test_transpose_naive
@cuda.jit
def transpose_naive(a, out):
    x, y = cuda.grid(2)
    if x < a.shape[0] and y < a.shape[1]:
        out[x, y] = a[y, x]

# %% mutant name=tiled_transpose_unpadded cell=transpose_tiled fails=test_transpose_tiled
@cuda.jit
def transpose_tiled(a, out):
    tile = cuda.shared.array((TILE, TILE), float32)
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

# %% mutant name=tiled_transpose_missing_barrier cell=transpose_tiled fails=test_transpose_tiled
@cuda.jit
def transpose_tiled(a, out):
    tile = cuda.shared.array((TILE, TILE + 1), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    x = cuda.blockIdx.x * TILE + tx
    y = cuda.blockIdx.y * TILE + ty
    for j in range(0, TILE, ROWS):
        if x < a.shape[1] and y + j < a.shape[0]:
            tile[ty + j, tx] = a[y + j, x]
    x = cuda.blockIdx.y * TILE + tx
    y = cuda.blockIdx.x * TILE + ty
    for j in range(0, TILE, ROWS):
        if x < out.shape[1] and y + j < out.shape[0]:
            out[y + j, x] = tile[tx, ty + j]

# %% mutant name=tiled_transpose_uncoalesced_writes cell=transpose_tiled fails=test_transpose_tiled
@cuda.jit
def transpose_tiled(a, out):
    tile = cuda.shared.array((TILE, TILE + 1), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    x = cuda.blockIdx.x * TILE + tx
    y = cuda.blockIdx.y * TILE + ty
    for j in range(0, TILE, ROWS):
        if x < a.shape[1] and y + j < a.shape[0]:
            tile[ty + j, tx] = a[y + j, x]
    cuda.syncthreads()
    for j in range(0, TILE, ROWS):
        if x < a.shape[1] and y + j < a.shape[0]:
            out[x, y + j] = tile[ty + j, tx]

# %% mutant name=reduction_missing_barrier cell=block_sum fails=test_block_sum
@cuda.jit
def block_sum(x, partial):
    s = cuda.shared.array(RBLOCK, float32)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    s[t] = x[i] if i < x.size else 0.0
    cuda.syncthreads()
    stride = RBLOCK // 2
    while stride > 0:
        if t < stride:
            s[t] += s[t + stride]
        stride //= 2
    if t == 0:
        partial[cuda.blockIdx.x] = s[0]

# %% mutant name=reduction_no_bounds cell=block_sum fails=test_block_sum
@cuda.jit
def block_sum(x, partial):
    s = cuda.shared.array(RBLOCK, float32)
    t = cuda.threadIdx.x
    s[t] = x[cuda.grid(1)]
    cuda.syncthreads()
    stride = RBLOCK // 2
    while stride > 0:
        if t < stride:
            s[t] += s[t + stride]
        cuda.syncthreads()
        stride //= 2
    if t == 0:
        partial[cuda.blockIdx.x] = s[0]

# %% mutant name=reduction_interleaved_variant cell=block_sum fails=
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
@cuda.jit
def hist_global(data, bins):
    i = cuda.grid(1)
    if i < data.size:
        bins[data[i]] += 1

# %% mutant name=private_histogram_not_atomic cell=hist_shared fails=test_hist_shared
@cuda.jit
def hist_shared(data, bins):
    h = cuda.shared.array(NBINS, int32)
    t = cuda.threadIdx.x
    for b in range(t, NBINS, cuda.blockDim.x):
        h[b] = 0
    cuda.syncthreads()
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        h[data[i]] += 1
    cuda.syncthreads()
    for b in range(t, NBINS, cuda.blockDim.x):
        cuda.atomic.add(bins, b, h[b])

# %% mutant name=private_histogram_flush_without_barrier cell=hist_shared fails=test_hist_shared
@cuda.jit
def hist_shared(data, bins):
    h = cuda.shared.array(NBINS, int32)
    t = cuda.threadIdx.x
    for b in range(t, NBINS, cuda.blockDim.x):
        h[b] = 0
    cuda.syncthreads()
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        cuda.atomic.add(h, data[i], 1)
    for b in range(t, NBINS, cuda.blockDim.x):
        cuda.atomic.add(bins, b, h[b])

# %% mutant name=private_histogram_is_really_global cell=hist_shared fails=test_hist_shared
@cuda.jit
def hist_shared(data, bins):
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        cuda.atomic.add(bins, data[i], 1)

# %% mutant name=private_histogram_one_thread_flushes_variant cell=hist_shared fails=
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
@cuda.jit
def matmul_tiled(A, B, C):
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
    if row < C.shape[0] and col < C.shape[1]:
        C[row, col] = acc

# %% mutant name=matmul_no_zero_fill cell=matmul_tiled fails=test_matmul_tiled
@cuda.jit
def matmul_tiled(A, B, C):
    sA = cuda.shared.array((MM_TILE, MM_TILE), float32)
    sB = cuda.shared.array((MM_TILE, MM_TILE), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    col = cuda.blockIdx.x * MM_TILE + tx
    row = cuda.blockIdx.y * MM_TILE + ty
    acc = float32(0.0)
    for k0 in range(0, A.shape[1], MM_TILE):
        if row < A.shape[0] and k0 + tx < A.shape[1]:
            sA[ty, tx] = A[row, k0 + tx]
        if k0 + ty < B.shape[0] and col < B.shape[1]:
            sB[ty, tx] = B[k0 + ty, col]
        cuda.syncthreads()
        for k in range(MM_TILE):
            acc += sA[ty, k] * sB[k, tx]
        cuda.syncthreads()
    if row < C.shape[0] and col < C.shape[1]:
        C[row, col] = acc

# %% mutant name=matmul_naive_in_disguise cell=matmul_tiled fails=test_matmul_tiled
@cuda.jit
def matmul_tiled(A, B, C):
    col, row = cuda.grid(2)
    if row < C.shape[0] and col < C.shape[1]:
        acc = 0.0
        for k in range(A.shape[1]):
            acc += A[row, k] * B[k, col]
        C[row, col] = acc

# %% mutant name=embedding_backward_not_atomic cell=embedding fails=test_embedding_backward
@cuda.jit
def embedding_forward(weight, ids, out):
    j, t = cuda.grid(2)
    if t < ids.size and j < weight.shape[1]:
        out[t, j] = weight[ids[t], j]


@cuda.jit
def embedding_backward(grad_out, ids, grad_weight):
    j, t = cuda.grid(2)
    if t < ids.size and j < grad_out.shape[1]:
        grad_weight[ids[t], j] += grad_out[t, j]

# %% mutant name=embedding_backward_overwrites cell=embedding fails=test_embedding_backward
@cuda.jit
def embedding_forward(weight, ids, out):
    j, t = cuda.grid(2)
    if t < ids.size and j < weight.shape[1]:
        out[t, j] = weight[ids[t], j]


@cuda.jit
def embedding_backward(grad_out, ids, grad_weight):
    j, t = cuda.grid(2)
    if t < ids.size and j < grad_out.shape[1]:
        grad_weight[ids[t], j] = grad_out[t, j]

# %% mutant name=embedding_indexes_weight_by_position cell=embedding fails=test_embedding_forward
@cuda.jit
def embedding_forward(weight, ids, out):
    j, t = cuda.grid(2)
    if t < ids.size and j < weight.shape[1]:
        out[t, j] = weight[t % weight.shape[0], j]


@cuda.jit
def embedding_backward(grad_out, ids, grad_weight):
    j, t = cuda.grid(2)
    if t < ids.size and j < grad_out.shape[1]:
        cuda.atomic.add(grad_weight, (ids[t], j), grad_out[t, j])

# %% mutant name=decode_all_at_link_speed cell=decode_seconds fails=test_decode_seconds
def decode_seconds(model_bytes, device_bytes, device_bw, link_bw):
    if model_bytes <= device_bytes:
        return model_bytes / device_bw
    return model_bytes / link_bw

# %% mutant name=decode_seconds_variant cell=decode_seconds fails=
def decode_seconds(model_bytes, device_bytes, device_bw, link_bw):
    spill = max(model_bytes - device_bytes, 0)
    return (model_bytes - spill) / device_bw + spill / link_bw
