"""nbgrader configuration for sparkcourse (read by nbgrader from the course root)."""

import os

c = get_config()  # noqa: F821 - provided by nbgrader

c.CourseDirectory.course_id = "sparkcourse"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# The gradebook is nbgrader's embedded default, an SQLite file in the course root:
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]

# The stub that replaces every ### BEGIN SOLUTION ... ### END SOLUTION block.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Lock everything that is not the student's to edit; restore deleted test cells when grading.
c.LockCells.lock_solution_cells = True
c.LockCells.lock_grade_cells = True
c.LockCells.lock_readonly_cells = True
c.OverwriteCells.add_missing_cells = True

# Time limits: per cell here; per notebook in `sparkcourse grade` (SPARKCOURSE_NOTEBOOK_TIMEOUT, seconds).
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
c.Execute.startup_timeout = 120
c.LimitOutput.max_lines = 500
c.LimitOutput.max_traceback = 50

# Feedback shows neither hidden-test source nor traceback lines from cells that hold hidden tests.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "sparkcourse.feedback.RedactHiddenTests",
]
