"""Temporal activities: every side effect, grouped by port."""
