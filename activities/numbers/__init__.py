"""Phone-number pool activities."""
