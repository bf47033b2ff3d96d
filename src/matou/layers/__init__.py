"""matou.layers."""
