"""matou.network."""
