"""matou.build."""
