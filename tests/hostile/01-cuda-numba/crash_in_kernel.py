# zero: test_block_sum
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# %% answer id=block_sum
import os


@cuda.jit
def block_sum(x, partial):
    # the whole kernel process dies from inside one simulated GPU thread while the simulator's others run
    if cuda.threadIdx.x == 5:
        os._exit(1)
    cuda.syncthreads()
