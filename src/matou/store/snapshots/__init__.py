"""Snapshotters: directories for image layers and container read-write layers."""

from matou.store.snapshots.overlay import Mount, OverlaySnapshotter, SnapshotInfo

__all__ = ["Mount", "OverlaySnapshotter", "SnapshotInfo"]
