"""The code of docs/tutorial.md, which includes these files verbatim (tests/unit/test_tutorial.py
checks that the two agree, and runs the tutorial's tests)."""
