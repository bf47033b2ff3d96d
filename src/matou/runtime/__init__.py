"""matou.runtime."""
