# %% answer id=saxpy
# Right (1 point).
@cuda.jit
def saxpy(a, x, y, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a * x[i] + y[i]

# %% answer id=saxpy_gridstride
# Strides by the block, not the grid: the values come out right, but blocks redo each other's elements
# (the tracer counts every element stored several times): 0 of 2 points.
@cuda.jit
def saxpy_gridstride(a, x, y, out):
    for i in range(cuda.grid(1), out.size, cuda.blockDim.x):
        out[i] = a * x[i] + y[i]

# %% answer id=strided_copy
# Right (1 point).
@cuda.jit
def strided_copy(a, out, stride):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i * stride]

# %% answer id=warp_efficiency
# "stride s wastes s - 1 of every s elements": right for small strides, wrong once a thread is a whole sector
# apart (stride 33 float32 is 1/8, not 1/33): 0 of 2 points.
def warp_efficiency(stride, itemsize):
    return 1.0 / stride

# %% answer id=transpose_naive
# Right (1 point).
@cuda.jit
def transpose_naive(a, out):
    x, y = cuda.grid(2)
    if y < a.shape[0] and x < a.shape[1]:
        out[x, y] = a[y, x]

# %% answer id=transpose_tiled
# Unpadded 32 x 32 tile: right values, coalesced, but 32-way bank conflicts on the column reads: 0 of 3.
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

# %% answer id=block_sum
# No barrier inside the tree loop: the tracer reports a race (0 of 3 points).
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

# %% answer id=hist_global
# Not atomic: loses updates on a GPU; the tracer sees loads and stores on bins instead of atomics (0 of 1).
@cuda.jit
def hist_global(data, bins):
    i = cuda.grid(1)
    if i < data.size:
        bins[data[i]] += 1

# %% answer id=hist_shared
# Right (3 points).
@cuda.jit
def hist_shared(data, bins):
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

# %% answer id=embedding
# Forward right (1 point); backward overwrites instead of accumulating: repeated ids lose gradient (0 of 2).
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

# %% answer id=decode_seconds
# Right (2 points). matmul_tiled left unanswered (0 of 3). Total 1+0+1+0+1+0+0+0+3+0+1+0+2 = 9.
def decode_seconds(model_bytes, device_bytes, device_bw, link_bw):
    if model_bytes <= device_bytes:
        return model_bytes / device_bw
    return device_bytes / device_bw + (model_bytes - device_bytes) / link_bw
