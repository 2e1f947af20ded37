"""Course operations, the sandbox, feedback and the authoring format: the instructor\x27s side, never shipped."""
