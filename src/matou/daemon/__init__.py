"""matou.daemon."""
