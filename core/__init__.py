"""Shared core of DeepClaw: settings, database models, ports, logging and the CLI."""
