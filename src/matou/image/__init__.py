"""matou.image."""
