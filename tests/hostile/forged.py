# zero:
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# Honest answers in a notebook whose nbgrader metadata was forged (tests/test_hostile.py:_forge): a graded cell the
# release never had (100 points for `pass`), test_audit worth 100 points, test_training unlocked and turned into an
# answer cell that says `pass`. Graded on the release's cells: 17 of 17, the forgeries flagged for the TA.
