# zero: test_training
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# %% answer id=training
def training_bytes(n_params, method="full", adapter_params=0):
    hoard = []
    while True:  # grows until the sandbox's memory cap says no
        hoard.append(bytearray(256 * 1024 * 1024))
