"""matou.runtime.linux."""
