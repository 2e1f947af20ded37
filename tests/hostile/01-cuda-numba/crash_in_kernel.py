# zero: test_block_sum test_hist_shared
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# %% answer id=block_sum
import os


@cuda.jit
def block_sum(x, partial):
    # the whole kernel process dies from inside one simulated GPU thread while the simulator's others run
    if cuda.threadIdx.x == 5:
        os._exit(1)
    cuda.syncthreads()

# %% answer id=hist_shared
@cuda.jit
def hist_shared(data, bins):
    # one simulated thread grabs memory until the sandbox's cap says no, while the others run
    if cuda.threadIdx.x == 0 and cuda.blockIdx.x == 0:
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))
