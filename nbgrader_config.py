"""nbgrader configuration for sparkcourse (read by nbgrader from the course root)."""

import os

c = get_config()  # noqa: F821 - provided by nbgrader

c.CourseDirectory.course_id = "sparkcourse"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# The gradebook is nbgrader's embedded default, an SQLite file in the course root:
# `timeout`: a writer waits up to 120 s for another grading worker's transaction instead of failing with
# "database is locked" (`sparkcourse grade` also switches the file to WAL so readers never block writers).
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db") + "?timeout=120"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]

# The stub that replaces every ### BEGIN SOLUTION ... ### END SOLUTION block.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Lock everything that is not the student's to edit; restore deleted test cells when grading.
c.LockCells.lock_solution_cells = True
c.LockCells.lock_grade_cells = True
c.LockCells.lock_readonly_cells = True
c.OverwriteCells.add_missing_cells = True

# Grading runs each submission in sparkcourse's sandboxed, crash-tolerant kernel (sparkcourse/grader/sandbox/execute.py):
# nbgrader's Execute is replaced, the rest of nbgrader's autograde steps are unchanged.
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "sparkcourse.grader.sandbox.execute.DropDuplicateGradeIds",
    "sparkcourse.grader.metadata.TrustReleaseMetadata",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.Autograde.autograde_preprocessors = [
    "sparkcourse.grader.sandbox.execute.SandboxedExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Time limits: per cell (Execute.timeout) and per notebook (SandboxedExecute.notebook_timeout, default
# SPARKCOURSE_NOTEBOOK_TIMEOUT or 300 s; cells after it record 0). Memory, processes, file size and output caps:
# SandboxedExecute.memory_mb / nproc / fsize_mb / output_limit (see sparkcourse/grader/sandbox/execute.py).
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
c.Execute.startup_timeout = 120
c.LimitOutput.max_lines = 500
c.LimitOutput.max_traceback = 50

# Feedback shows neither hidden-test source nor traceback lines from cells that hold hidden tests; its math is
# MathML, which renders with no network (the page would fetch MathJax).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "sparkcourse.grader.feedback.RedactHiddenTests",
    "sparkcourse.grader.feedback.MathToMathML",
]
