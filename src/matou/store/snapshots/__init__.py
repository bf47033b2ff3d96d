"""matou.store.snapshots."""
