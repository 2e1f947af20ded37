"""Submitted nbgrader metadata is not trusted: it is checked against the release before nbgrader's own
preprocessors read it.

A student's notebook carries nbgrader metadata in every cell, and a student (or a broken editor) can change it:
add a graded cell the release never had, raise a cell's points, unlock a test cell, turn a test into an answer.
nbgrader's own restoration (``OverwriteCells``) crashes on some of these, leaving the submission ungraded. Here,
before that, every cell's metadata is compared with the gradebook's record of the release: cells the release
never had lose their nbgrader metadata (they become plain cells worth nothing), changed ones are reset to the
release's, and each change is printed as a ``[sparkcourse.grader.flag]`` line, which ``sparkcourse grade``
records in ``reports/grade.json`` for the TA. The submission is then graded on the release's cells.
"""

from __future__ import annotations

import sys

from nbgrader.api import Gradebook
from nbgrader.preprocessors import NbGraderPreprocessor

FLAG = "[sparkcourse.grader.flag]"


def release_metadata(db_url: str, notebook: str, assignment: str) -> dict[str, tuple[str, dict]]:
    """grade_id -> (cell type, nbgrader metadata) of every nbgrader cell of the released notebook."""
    with Gradebook(db_url) as gb:
        nb = gb.find_notebook(notebook, assignment)
        points = {c.name: c.max_score for c in nb.grade_cells}
        solutions = {c.name for c in nb.solution_cells}
        out = {}
        for c in nb.source_cells:
            meta = {"grade": c.name in points, "grade_id": c.name, "locked": bool(c.locked),
                    "schema_version": 3, "solution": c.name in solutions}
            if c.name in points:
                meta["points"] = points[c.name]
            out[c.name] = (c.cell_type, meta)
        return out


def _differs(meta: dict, want: dict) -> list[str]:
    """The metadata fields that matter for grading and differ from the release's."""
    out = [k for k in ("grade", "solution", "locked") if bool(meta.get(k)) != want[k]]
    if want["grade"] and meta.get("points") != want["points"]:
        out.append("points")
    return out


class TrustReleaseMetadata(NbGraderPreprocessor):
    """Reset every cell's nbgrader metadata to the release's; drop it from cells the release never had."""

    def preprocess(self, nb, resources):
        """Check each cell against the gradebook; print one flag line per change."""
        info = resources.get("nbgrader", {})
        try:
            release = release_metadata(info["db_url"], info["notebook"], info["assignment"])
        except Exception as exc:  # no gradebook record: nbgrader's own checks decide, as before
            self.log.warning("sparkcourse: release metadata unavailable (%s)", exc)
            return nb, resources
        flags = []
        for i, cell in enumerate(nb.cells):
            meta = cell.metadata.get("nbgrader")
            if not isinstance(meta, dict):
                continue
            gid = meta.get("grade_id")
            if gid not in release:
                del cell.metadata["nbgrader"]
                flags.append(f"cell {i}: nbgrader metadata the release never had (grade id {gid!r}) removed")
                continue
            cell_type, want = release[gid]
            changed = _differs(meta, want)
            if changed or cell.cell_type != cell_type:
                cell.metadata["nbgrader"] = dict(want)
                flags.append(f"cell {gid}: {', '.join(changed) or 'cell type'} changed; the release's restored")
        for line in flags:
            sys.stdout.write(f"{FLAG} {line}\n")
        sys.stdout.flush()
        return nb, resources
