"""matou.store."""
