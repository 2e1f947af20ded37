# Plausible mistakes for 09-inference (see tests/test_mutants.py for the format).

# %% mutant name=no_max_shift cell=softmax fails=test_softmax
replace <<<
    e = np.exp(x - x.max(axis=axis, keepdims=True))
===
    e = np.exp(x)
>>>

# %% mutant name=not_normalised cell=softmax fails=test_softmax
replace <<<
    return e / e.sum(axis=axis, keepdims=True)
===
    return e
>>>

# %% mutant name=normalised_over_everything cell=softmax fails=test_softmax
replace <<<
    return e / e.sum(axis=axis, keepdims=True)
===
    return e / e.sum()
>>>

# %% mutant name=axis_ignored cell=softmax fails=test_softmax
replace <<<
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
===
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
>>>

# %% mutant name=log_softmax cell=softmax fails=test_softmax
replace <<<
    return e / e.sum(axis=axis, keepdims=True)
===
    return np.log(e / e.sum(axis=axis, keepdims=True))
>>>

# %% variant name=through_logsumexp cell=softmax
def softmax(x, axis=-1):
    from scipy.special import logsumexp

    x = np.asarray(x, dtype=np.float64)
    return np.exp(x - logsumexp(x, axis=axis, keepdims=True))
