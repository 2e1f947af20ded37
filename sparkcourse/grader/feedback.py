"""Feedback that never shows hidden tests: neither their source nor their traceback lines."""

from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor

from sparkcourse.grader.authoring import BEGIN_HIDDEN as BEGIN
from sparkcourse.grader.authoring import strip_hidden

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_error(output: dict) -> list[str]:
    """A traceback reduced to the error's type and message: what the test chose to tell the student."""
    ename, evalue = output.get("ename", "Error"), _ANSI.sub("", str(output.get("evalue", "")))
    return [f"{ename}: {evalue}"]


class RedactHiddenTests(NbGraderPreprocessor):
    """Strip hidden-test source and reduce tracebacks of cells that had hidden tests to the message."""

    def preprocess_cell(self, cell, resources, index):
        """Redact one cell."""
        if cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = strip_hidden(cell.source)
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    out["traceback"] = short_error(out)
        return cell, resources
