"""matou.logs."""
