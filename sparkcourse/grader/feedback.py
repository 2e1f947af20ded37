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


_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$\w])\$(?=\S)((?:[^$\n]|\n(?!\s*\n))+?)(?<=\S)\$(?![\w$])")


def math_to_mathml(markdown: str) -> str:
    """Markdown with its ``$…$`` and ``$$…$$`` math replaced by MathML, which browsers render with no script.

    Code spans and fenced blocks are left alone; a formula latex2mathml cannot read stays as it was.
    """
    from latex2mathml.converter import convert

    def one(m: re.Match, display: str) -> str:
        try:
            return convert(m.group(1).strip(), display=display).replace("\n", "")
        except Exception:  # noqa: BLE001 - any formula it cannot read is left for MathJax
            return m.group(0)

    parts = _CODE.split(markdown)
    for i in range(0, len(parts), 2):  # even parts lie outside code
        text = _DISPLAY.sub(lambda m: one(m, "block"), parts[i])
        parts[i] = _INLINE.sub(lambda m: one(m, "inline"), text)
    return "".join(parts)


class MathToMathML(NbGraderPreprocessor):
    """Feedback pages render their math offline: markdown math becomes MathML (nbconvert's page fetches MathJax
    from the network, and shows raw ``$$…$$`` without it)."""

    def preprocess_cell(self, cell, resources, index):
        """Convert one markdown cell."""
        if cell.cell_type == "markdown" and "$" in cell.source:
            cell.source = math_to_mathml(cell.source)
        return cell, resources
