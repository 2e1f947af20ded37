"""The grading sandbox: namespaces around each ``nbgrader autograde`` (``namespaces``), the Execute preprocessor
that launches the sandbox kernel (``execute``), and the kernel that isolates itself (``isolation``, ``guards``,
``kernel``). The README's threat model says what each layer stops.

Importing the package is light (no nbgrader, no Jupyter): it re-exports the grader-side helpers ``course.py`` uses.
nbgrader_config.py names ``sparkcourse.grader.sandbox.execute.SandboxedExecute`` and ``DropDuplicateGradeIds``.
"""

from sparkcourse.grader.sandbox.namespaces import enabled, isolation_prefix, kill_uid

__all__ = ["enabled", "isolation_prefix", "kill_uid"]
