"""Fast mutation harness: run a source notebook's set-up, answer and test cells in-process, with some answer
cells replaced, and report which test cells pass. Used by tests/test_mutants.py in a subprocess per week.

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


def run(notebook: str, scenarios: dict[str, dict]) -> dict[str, dict[str, bool]]:
    """For each scenario, which test cells pass.

    A scenario is ``{"replace": {grade_id: source}, "until": [test ids]}``: the answer cells to replace and,
    optionally, the test cells it is about; the run stops after the last of those (no later cell can change
    their outcome), so a mutant of an early cell does not pay for the rest of the notebook."""
    import nbformat

    os.environ["NBGRADER_EXECUTION"] = "autograde"
    os.environ.setdefault("MPLBACKEND", "Agg")
    cells = nbformat.read(notebook, as_version=4).cells
    results = {}
    for name, scenario in scenarios.items():
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
        results[name] = outcome
    return results


if __name__ == "__main__":
    nb_path, scenario_file = sys.argv[1], sys.argv[2]
    with open(scenario_file) as fh:
        print(json.dumps(run(nb_path, json.load(fh))))
