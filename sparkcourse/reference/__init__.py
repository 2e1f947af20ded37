"""Instructor-only reference solutions, one module per assignment. Never shipped to students (see ``bundle``)."""
