"""matou.cli."""
