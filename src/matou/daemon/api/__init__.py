"""matou.daemon.api."""
