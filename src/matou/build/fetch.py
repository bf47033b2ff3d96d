"""ADD <url>: download a file once per step, hashing it as it arrives (the hash is the step's cache key).

Docker's rules: the file is named after the last path component of the URL (unless the destination is a file
path), gets mode 0600 and, when the server sends ``Last-Modified``, that mtime. ``--checksum=sha256:...`` is
verified. Blocking; called from a worker thread.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import posixpath
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from matou.errors import DataCorruption, InvalidArgument, Unavailable


@dataclass
class Download:
    path: str  # the temporary file
    name: str  # the file name the URL suggests
    digest: str  # sha256 hex
    size: int
    mtime: int


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def download(url: str, tmpdir: str, checksum: str | None = None, timeout: float = 300.0) -> Download:
    parsed = urllib.parse.urlparse(url)
    name = posixpath.basename(parsed.path.rstrip("/")) or parsed.hostname or "download"
    path = os.path.join(tmpdir, f"add-{hashlib.sha256(url.encode()).hexdigest()[:16]}-{time.monotonic_ns()}")
    h = hashlib.sha256()
    size = 0
    req = urllib.request.Request(url, headers={"User-Agent": "matou-builder"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r, open(path, "wb") as f:
            lm = r.headers.get("Last-Modified")
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                f.write(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as e:
        raise Unavailable(f"failed to download {url}: {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise Unavailable(f"failed to download {url}: {getattr(e, 'reason', e)}") from None
    mtime = 0
    if lm:
        try:
            mtime = int(email.utils.parsedate_to_datetime(lm).timestamp())
        except (TypeError, ValueError):
            mtime = 0
    digest = h.hexdigest()
    if checksum:
        algo, _, want = checksum.partition(":")
        if algo != "sha256" or not want:
            raise InvalidArgument(f"unsupported --checksum {checksum!r}: use sha256:<hex>")
        if want != digest:
            os.unlink(path)
            raise DataCorruption(f"digest mismatch for {url}: expected sha256:{want}, got sha256:{digest}")
    return Download(path, name, digest, size, mtime)
