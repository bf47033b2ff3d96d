"""matou.daemon.services."""
