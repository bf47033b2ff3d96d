"""matou.monitor."""
