"""matou.client."""
