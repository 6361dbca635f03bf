"""ArchiveStore adapters."""
