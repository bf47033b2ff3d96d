"""matou.distribution."""
