"""The local platform: embedded PostgreSQL, a Temporal dev server and the supervisor behind `make run`.

Used by `python -m devstack run` and by the test fixtures, so tests run on the same stack developers do.
"""
