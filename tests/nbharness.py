"""Fast mutation harness: run a source notebook's set-up, answer and test cells in-process, with some answer
cells replaced, and report which test cells pass. ``nbharness.py NOTEBOOK SCENARIOS.json`` runs them all and prints
the outcomes; ``nbharness.py --serve NOTEBOOK SCENARIOS.json`` runs the ones named on stdin, one at a time, which
is how tests/test_mutants.py shares a week's scenarios between subprocesses.

Real grading goes through nbgrader (tests/test_notebooks.py); this harness exists so dozens of mutants per
week can be checked in seconds. It runs the cells nbgrader grades — set-up (read-only), answer and test
cells, hidden tests included — and skips ordinary explore cells, which tests must not depend on.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def load(notebook: str) -> list:
    """The notebook's cells, with the environment the graded cells expect."""
    import nbformat

    os.environ["NBGRADER_EXECUTION"] = "autograde"
    os.environ.setdefault("MPLBACKEND", "Agg")
    return nbformat.read(notebook, as_version=4).cells


def run_one(cells: list, scenario: dict) -> dict[str, bool]:
    """Which test cells pass in one scenario.

    A scenario is ``{"replace": {grade_id: source}, "until": [test ids]}``: the answer cells to replace and,
    optionally, the test cells it is about; the run stops after the last of those (no later cell can change
    their outcome), so a mutant of an early cell does not pay for the rest of the notebook."""
    replace, until = scenario.get("replace", {}), set(scenario.get("until", ()))
    ns: dict = {"__name__": "__main__"}
    outcome: dict[str, bool] = {}
    for cell in cells:
        if until and until <= outcome.keys():
            break
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if cell.cell_type != "code" or not gid:
            continue
        src = replace.get(gid, cell.source)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(src, f"<{gid}>", "exec"), ns)
            ok = True
        except BaseException as exc:  # noqa: BLE001 - a mutant may raise anything, SystemExit included
            ok = False
            if isinstance(exc, KeyboardInterrupt):
                raise
        if meta.get("grade"):
            outcome[gid] = ok
    return outcome


def run(notebook: str, scenarios: dict[str, dict]) -> dict[str, dict[str, bool]]:
    """For each scenario (see :func:`run_one`), which test cells pass."""
    cells = load(notebook)
    return {name: run_one(cells, scenario) for name, scenario in scenarios.items()}


def serve(notebook: str, scenarios: dict[str, dict]) -> None:
    """Run the scenarios named on stdin, one name a line, answering each with a JSON line ``{name: outcome}`` on
    stdout, until stdin closes: a week's imports stay loaded from one scenario to the next. The cells get
    /dev/null as stdin and stderr as stdout, so nothing they read or print can disturb the exchange."""
    cells = load(notebook)
    names, answers = os.fdopen(os.dup(0)), os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    for line in names:
        name = line.strip()
        answers.write(json.dumps({name: run_one(cells, scenarios[name])}) + "\n")
        answers.flush()


if __name__ == "__main__":
    args = sys.argv[1:]
    keep_serving = args[:1] == ["--serve"]
    nb_path, scenario_file = args[keep_serving:]
    with open(scenario_file) as fh:
        spec = json.load(fh)
    if keep_serving:
        serve(nb_path, spec)
    else:
        print(json.dumps(run(nb_path, spec)))
