"""Blob storage behind the StorageDriver protocol (see base.py for the contract every driver keeps)."""

from __future__ import annotations

from matou.registry.storage.base import BlobInfo, OffsetMismatch, StorageDriver, UploadInfo, UploadWriter

__all__ = ["BlobInfo", "OffsetMismatch", "StorageDriver", "UploadInfo", "UploadWriter", "open_driver"]


def open_driver(root: str) -> StorageDriver:
    """The driver for a registry root (the filesystem one; S3 will be chosen by configuration)."""
    from matou.registry.storage.filesystem import FilesystemDriver

    return FilesystemDriver(root)
