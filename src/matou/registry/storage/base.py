"""The StorageDriver protocol: where blob bytes and upload sessions live (filesystem now, S3 later).

Lifecycle: a driver is opened on its configuration, used from one event loop (methods are short and
synchronous; large transfers go through ``UploadWriter`` chunk by chunk, or through ``blob_path`` for
sendfile), and closed. The index (who links which blob) is not the driver's business.

Guarantees every driver gives, checked by tests/registry/test_storage_conformance.py:
- A blob is readable under a digest only if its bytes hash to that digest: ``commit_upload`` and
  ``put_blob`` verify the digest the driver computed itself while the bytes streamed in, make the data
  durable, and only then publish it atomically. A failed or interrupted write publishes nothing.
- Upload sessions are resumable and shared: their state (the bytes so far) lives in the storage, so any
  replica can continue one; an in-memory hash state is only a cache, rebuilt from the bytes when missing.
- Appends to one session are serialised across processes; an append at the wrong offset is refused.
- ``delete_blob`` is safe against a concurrent re-upload of the same digest: the driver moves the data
  aside, asks ``still_wanted()`` (the index's view) and puts it back if the blob was wanted again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class UploadInfo:
    upload_id: str
    size: int
    mtime: float


class UploadWriter(Protocol):
    """Appends to one upload session; holds its lock until ``close``."""

    @property
    def size(self) -> int:
        """Bytes in the session so far (including those written through this writer)."""
        ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> int:
        """Releases the session; returns its size. Safe to call twice."""
        ...


class StorageDriver(Protocol):
    name: str

    # blobs: immutable, content-addressed
    def stat_blob(self, digest: str) -> int | None:
        """Size of a published blob, or None."""
        ...

    def blob_path(self, digest: str) -> str | None:
        """A local file path to serve with sendfile, or None if the driver has none (or no such blob)."""
        ...

    def open_blob(self, digest: str) -> BinaryIO:
        """A binary reader; raises NotFound."""
        ...

    def read_blob(self, digest: str) -> bytes:
        """The whole blob (for small ones: manifests); raises NotFound."""
        ...

    def put_blob(self, digest: str, data: bytes, before_publish: Callable[[int], None] | None = None) -> int:
        """Stores small content whose digest the caller claims; raises DataCorruption if it is not."""
        ...

    def delete_blob(self, digest: str, still_wanted: Callable[[], bool] | None = None) -> bool:
        """Removes a blob unless ``still_wanted()`` says otherwise after it was moved aside."""
        ...

    def list_blobs(self) -> Iterator[BlobInfo]: ...

    # upload sessions
    def create_upload(self) -> str: ...

    def upload_size(self, upload_id: str) -> int:
        """Raises NotFound for an unknown or finished session."""
        ...

    def open_upload(self, upload_id: str, offset: int | None = None) -> UploadWriter:
        """Locks the session for appending at ``offset`` (None: at its end). Raises NotFound, or
        OffsetMismatch when ``offset`` is not the session's size."""
        ...

    def commit_upload(
        self, upload_id: str, digest: str, before_publish: Callable[[int], None] | None = None
    ) -> int:
        """Verifies the session's bytes against ``digest`` and publishes them as that blob; returns the size.
        On a mismatch the session is deleted and DataCorruption raised. ``before_publish(size)`` runs after
        verification, before the blob becomes readable (the index records it first)."""
        ...

    def delete_upload(self, upload_id: str) -> bool: ...

    def list_uploads(self) -> Iterator[UploadInfo]: ...

    def close(self) -> None: ...


class OffsetMismatch(Exception):
    """An append did not start where the session ends (HTTP 416); ``size`` is where it does end."""

    def __init__(self, size: int) -> None:
        super().__init__(f"upload is at offset {size}")
        self.size = size
