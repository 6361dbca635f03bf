"""Temporal workers: which task queue runs which workflows and activities."""
