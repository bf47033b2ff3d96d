"""matou.registry."""
