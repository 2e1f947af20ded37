"""Plausible mistakes must fail their tests; the reference solution and correct variants must pass.

Each week keeps its mutants in tests/mutants/NN-topic.py as blocks:
    # %% mutant name=NAME cell=GRADE_ID fails=TEST_ID[,TEST_ID]
    <replacement source of that answer cell>
A block with ``fails=`` empty is a *variant*: a correct answer written differently, which must pass everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ASSIGNMENTS, ROOT

from sparkcourse.grading.authoring import Kind, split_blocks, unique

MUTANT_FILES = {a: ROOT / "tests" / "mutants" / f"{a}.py" for a in ASSIGNMENTS}
MUTANT_KINDS = {"mutant": Kind(("name", "cell"), ("fails",))}


def parse_mutants(text: str, name: str = "<mutants>") -> list[dict]:
    """Mutant blocks of one file."""
    blocks = unique(split_blocks(text, MUTANT_KINDS, name, preamble=True), "name").values()
    return [{"name": b.opts["name"], "cell": b.opts["cell"],
             "fails": [t for t in b.opts.get("fails", "").split(",") if t], "source": b.text} for b in blocks]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[list[dict], dict]]:
    """Run every week's mutants, one subprocess per notebook."""
    out = {}
    for a, path in MUTANT_FILES.items():
        if not path.exists():
            continue
        mutants = parse_mutants(path.read_text())
        scenarios = {"reference": {}} | {m["name"]: {m["cell"]: m["source"]} for m in mutants}
        spec = tmp_path_factory.mktemp("mutants") / f"{a}.json"
        spec.write_text(json.dumps(scenarios))
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "nbharness.py"),
                               str(ROOT / "source" / a / f"{a}.ipynb"), str(spec)],
                              capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[a] = (mutants, json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_every_week_has_mutants(a):
    assert MUTANT_FILES[a].exists(), f"tests/mutants/{a}.py is missing"
    mutants = parse_mutants(MUTANT_FILES[a].read_text())
    assert len([m for m in mutants if m["fails"]]) >= 5, f"{a}: keep at least 5 plausible mistakes"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_reference_passes_in_harness(outcomes, a):
    _, results = outcomes[a]
    failed = [t for t, ok in results["reference"].items() if not ok]
    assert not failed, f"{a}: the reference fails {failed} in the harness"


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_mutants_are_caught_and_variants_pass(outcomes, a):
    mutants, results = outcomes[a]
    problems = []
    for m in mutants:
        got = results[m["name"]]
        unknown = [t for t in m["fails"] if t not in got]
        if unknown:
            problems.append(f"{m['name']}: unknown test ids {unknown}")
        elif m["fails"]:
            survived = [t for t in m["fails"] if got[t]]
            if survived:
                problems.append(f"mutant {m['name']} survives {survived}")
        else:
            failed = [t for t, ok in got.items() if not ok]
            if failed:
                problems.append(f"correct variant {m['name']} fails {failed}")
    assert not problems, f"{a}:\n" + "\n".join(problems)
