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


def first_replaced(cells: list, scenario: dict) -> int:
    """Index of the first cell a scenario replaces (``len(cells)`` when it replaces none)."""
    replace = scenario.get("replace", {})
    return next((i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("grade_id") in replace),
                len(cells))


def run_one(cells: list, scenario: dict, start: int = 0, ns: dict | None = None,
            outcome: dict[str, bool] | None = None) -> dict[str, bool]:
    """Which test cells pass in one scenario.

    A scenario is ``{"replace": {grade_id: source}, "until": [test ids]}``: the answer cells to replace and,
    optionally, the test cells it is about; the run stops after the last of those (no later cell can change
    their outcome), so a mutant of an early cell does not pay for the rest of the notebook. ``start``, ``ns`` and
    ``outcome`` continue a run whose cells before ``start`` have been executed already (see :class:`Prefix`)."""
    replace, until = scenario.get("replace", {}), set(scenario.get("until", ()))
    ns = {"__name__": "__main__"} if ns is None else ns
    outcome = {} if outcome is None else outcome
    for cell in cells[start:]:
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


class Prefix:
    """The unmodified notebook run up to some cell, shared by the scenarios that replace a later cell: each of
    them runs in a forked child from there, so a mutant of cell k pays for cells k.. only, not for the set-up and
    every answer before it. Scenarios should come in notebook order (tests/test_mutants.py sends them so); one that
    replaces a cell already passed, or whose child dies without answering, runs from the start as before."""

    def __init__(self, cells: list):
        self.cells, self.pos, self.ns, self.outcome = cells, 0, {"__name__": "__main__"}, {}

    def run(self, scenario: dict) -> dict[str, bool]:
        first = first_replaced(self.cells, scenario)
        if first < self.pos or not hasattr(os, "fork"):
            return run_one(self.cells, scenario)
        run_one(self.cells[:first], {}, self.pos, self.ns, self.outcome)  # advance, unmodified
        self.pos = first
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: finish this scenario, answer through the pipe, never return
            try:
                os.close(read)
                answer = run_one(self.cells, scenario, first, self.ns, dict(self.outcome))
                os.write(write, json.dumps(answer).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as fh:
            data = fh.read()
        os.waitpid(pid, 0)
        return json.loads(data) if data else run_one(self.cells, scenario)


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
    prefix = Prefix(cells)
    for line in names:
        name = line.strip()
        answers.write(json.dumps({name: prefix.run(scenarios[name])}) + "\n")
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
