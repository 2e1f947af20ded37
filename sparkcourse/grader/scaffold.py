"""``sparkcourse new NN-topic``: scaffold a week that passes ``sparkcourse check`` as it is.

It writes the authoring file (set-up cell, one exercise with visible and hidden tests, an explore cell that uses
the lab), the reference module, a lab module, the week's tests, mutants, a sample class (a complete student
written differently, the untouched release, a malformed notebook), the registry entry and the README's map,
then renders the source notebook and builds the release. The example exercise (a numerically stable softmax,
graded against SciPy) is meant to be replaced: it shows the shape of a week, not its content.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from sparkcourse import weeks

AUTHORING = '''# %% markdown
# # Week $NN — $TITLE
#
# One paragraph: what the week teaches and why it matters on a DGX Spark (every number computed or cited).
#
# **You will learn to**
# 1. write a numerically stable softmax and check it against SciPy.
#
# **Time:** about 15 minutes. **Points:** 2, all autograded.

# %% setup id=setup
import numpy as np

import sparkcourse as sc
from sparkcourse.labs import $MODULE as lab
from sparkcourse.testing import check_close, check_property

profile = sc.setup()

# %% markdown
# ## 1. A stable softmax
#
# $$$$\\mathrm{softmax}(x)_i = \\frac{e^{x_i}}{\\sum_j e^{x_j}} = \\frac{e^{x_i - m}}{\\sum_j e^{x_j - m}},
# \\quad m = \\max_j x_j.$$$$
# Subtracting the maximum changes nothing mathematically and keeps `exp` from overflowing.
#
# ### Exercise 1 (2 points)
# Write `softmax(x, axis=-1)` for a NumPy array of any shape: probabilities along `axis`, same shape as `x`,
# finite for inputs as large as 1000.

# %% solution id=softmax
def softmax(x, axis=-1):
    """Probabilities along ``axis``; same shape as ``x``."""
    ### BEGIN SOLUTION
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
    ### END SOLUTION

# %% tests id=test_softmax points=2
out = softmax(np.array([1.0, 2.0, 3.0]))
check_property(np.shape(out) == (3,), "softmax must keep the input's shape")
check_close(float(np.sum(out)), 1.0, rtol=1e-9, name="sum of the probabilities")
check_property(bool(np.all(np.isfinite(softmax(np.array([1000.0, 0.0]))))),
               "softmax([1000, 0]) is not finite: subtract the maximum before exp")
### BEGIN HIDDEN TESTS
from scipy.special import softmax as _oracle

_rng = np.random.default_rng(0)
for _shape, _axis in (((5, 7), -1), ((5, 7), 0), ((3, 4, 6), 1), ((9,), 0)):
    _x = _rng.normal(size=_shape) * 30
    check_close(softmax(_x, axis=_axis), _oracle(_x, axis=_axis), rtol=1e-10, atol=1e-300,
                name=f"softmax of shape {_shape} along axis {_axis}")
check_close(softmax(np.array([1000.0, 1000.0])), np.array([0.5, 0.5]), rtol=1e-12, name="softmax([1000, 1000])")
### END HIDDEN TESTS

# %% markdown
# ## Explore: temperature
# Dividing the logits by a temperature $$T$$ flattens ($$T > 1$$) or sharpens ($$T < 1$$) the distribution.

# %%
for T, p in lab.temperature_sweep(softmax, np.array([2.0, 1.0, 0.1]), (0.5, 1.0, 2.0)):
    print(f"T = {T}: {np.round(p, 3)}")

# %% markdown
# ## Wrap-up
# The numbers to remember, and the papers and docs the week relied on.
'''

REFERENCE = '''"""Week $NN ($ID) reference solutions: instructor-only, checked against libraries in tests/weeks/."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def softmax(x, axis=-1):
    """Probabilities along ``axis`` (through log-sum-exp, so large inputs stay finite)."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(x - logsumexp(x, axis=axis, keepdims=True))
'''

LAB = '''"""Week $NN ($ID) lab code: experiments the notebook and its benchmarks share. Takes the student's functions as
arguments; never carries an exercise's answer."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


def temperature_sweep(softmax: Callable, logits: np.ndarray, temperatures: Iterable[float]) -> list[tuple]:
    """``(T, softmax(logits / T))`` for each temperature, with the student's ``softmax``."""
    return [(t, softmax(np.asarray(logits, dtype=np.float64) / t)) for t in temperatures]
'''

TESTS = '''"""Week $NN ($ID): the reference against SciPy, and the lab."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax

from sparkcourse.labs import $MODULE as lab
from sparkcourse.reference import $MODULE as ref


@pytest.mark.parametrize(("shape", "axis"), [((4, 5), -1), ((4, 5), 0), ((2, 3, 7), 1)])
def test_softmax_matches_scipy(shape, axis):
    x = np.random.default_rng(1).normal(size=shape) * 50
    np.testing.assert_allclose(ref.softmax(x, axis=axis), scipy_softmax(x, axis=axis), rtol=1e-12, atol=1e-300)


def test_temperature_sweep_uses_the_given_softmax():
    calls = []

    def spy(x):
        calls.append(x.copy())
        return ref.softmax(x)

    out = lab.temperature_sweep(spy, np.array([2.0, 0.0]), (0.5, 2.0))
    assert [t for t, _ in out] == [0.5, 2.0] and len(calls) == 2
    np.testing.assert_allclose(calls[0], [4.0, 0.0])
'''

MUTANTS = '''# Plausible mistakes for $ID (see tests/test_mutants.py for the format).

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
'''

ANSWER = '''# %% answer id=softmax
# Complete, written differently from the reference: moves the axis last, works row by row.
def softmax(x, axis=-1):
    moved = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    shifted = moved - moved.max(axis=-1)[..., None]
    p = np.exp(shifted)
    p /= p.sum(axis=-1)[..., None]
    return np.moveaxis(p, -1, axis)
'''

EXPECTED = '''# The sample class of $ID. Expected scores are worked out by hand from each student's answers;
# the class run (tests/test_pipeline.py, sparkcourse check) checks that grading reproduces them.
[students.ada]      # complete, written differently from the reference solution
score = 2
[students.blank]    # the release notebook, untouched
kind = "blank"
score = 0
[students.dee]      # a notebook truncated mid-file: reported as malformed, not graded, class carries on
kind = "malformed"
'''

REGISTRY = '''
[[week]]
id = "$ID"
title = "$TITLE"
topic = "TODO: the course-map line (what the week covers, with its oracles)"
status = "ready"
labs = true
deps = ["scipy"]
'''


def _title(week_id: str) -> str:
    return week_id[3:].replace("-", " ").capitalize()


def planned_files(root: Path, week: weeks.Week) -> dict[Path, str]:
    """Every file ``new`` writes for ``week``, with its text."""
    subs = {"NN": week.number, "ID": week.id, "MODULE": week.module, "TITLE": week.title}
    paths = week.paths(root)
    files = {paths["authoring"]: AUTHORING, paths["reference"]: REFERENCE, paths["lab"]: LAB,
             paths["tests"]: TESTS, paths["mutants"]: MUTANTS, paths["sample_class"]: EXPECTED,
             paths["sample_class"].with_name("ada.py"): ANSWER}
    return {path: Template(text).substitute(subs) for path, text in files.items()}


def new_week(root: Path, week_id: str, title: str | None = None) -> list[Path]:
    """Scaffold ``week_id`` under ``root``; refuses to overwrite anything. Returns the paths written."""
    if not weeks.ID_PATTERN.match(week_id):
        raise SystemExit(f"sparkcourse new: {week_id!r} is not a week id (NN-topic, lower case, e.g. 08-moe)")
    registry = weeks.registry_for(root)
    taken = {w.number: w for w in weeks.all_weeks(registry)}
    if week_id[:2] in taken and taken[week_id[:2]].ready:
        raise SystemExit(f"sparkcourse new: week {week_id[:2]} is already {taken[week_id[:2]].id}")
    week = weeks.Week(week_id, title or _title(week_id), "", labs=True)
    files = planned_files(root, week)
    clash = [p for p in files if p.exists()]
    if clash:
        raise SystemExit(f"sparkcourse new: would overwrite {', '.join(str(p.relative_to(root)) for p in clash)}")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _register(registry, week)
    return [*files, registry, *_render(root, week)]


def _register(registry: Path, week: weeks.Week) -> None:
    """Add the week to the registry (a planned entry of the same number is replaced)."""
    text = registry.read_text()
    planned = next((w for w in weeks.all_weeks(registry) if w.number == week.number), None)
    entry = Template(REGISTRY).substitute(ID=week.id, TITLE=week.title.replace('"', "'"))
    if planned is not None:
        start = text.index(f'[[week]]\nid = "{planned.id}"')
        end = text.find("\n[[week]]", start + 1)
        text = text[:start].rstrip("\n") + entry + ("" if end < 0 else text[end:])
    else:
        text = text.rstrip("\n") + "\n" + entry
    registry.write_text(text)


def _render(root: Path, week: weeks.Week) -> list[Path]:
    """The source notebook, the release and the README's course map for the new week."""
    from sparkcourse.grader import course
    from sparkcourse.grader.authoring import render

    paths = week.paths(root)
    paths["source"].parent.mkdir(parents=True, exist_ok=True)
    paths["source"].write_text(render(paths["authoring"]))
    failed = [r.message for r in course.build(root, [week.id]) if not r.ok]
    if failed:
        raise SystemExit(f"sparkcourse new: the release of {week.id} did not build:\n" + "\n".join(failed))
    readme = root / "README.md"
    if readme.exists():
        readme.write_text(weeks.with_course_map(readme.read_text(), weeks.registry_for(root)))
    return [paths["source"], paths["release"], readme]
