"""nftables through libnftables (ctypes) on the run path, the ``nft`` binary for the rest.

In-process libnftables saves the ~5 ms fork+exec of ``nft`` per call, so a published port costs one small command
(~0.2 ms, adding map elements). But its context costs ~3 MB of daemon memory from its first command on (a new
context per call would cost ~4 ms), so it is created only when a ``fast`` command first needs it (a port is
published); rare commands (rebuilding the table when networks change, at start) go through ``nft -f -`` until then.
Every batch is one nftables transaction: it applies whole or not at all. Not thread-safe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess

from matou.errors import SystemError_


class Nft:
    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._ctx: int | None = None
        self._no_lib = False
        if shutil.which("nft") is None and (ctypes.util.find_library("nftables") is None):
            raise SystemError_("nftables is not available: install the nftables package")

    def _open(self) -> bool:
        if self._lib is not None:
            return True
        if self._no_lib:
            return False
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            self._no_lib = True
            return False
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            self._no_lib = True
            return False
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self._lib, self._ctx = lib, ctx
        return True

    def run(self, commands: str, check: bool = True, fast: bool = False) -> str:
        """Run a batch (nft -f syntax) as one transaction; returns the output. Raises SystemError_ on failure.

        ``fast``: in-process (the run path); otherwise in-process only if the library is loaded already."""
        if self._lib is None and not (fast and self._open()):
            r = subprocess.run(["nft", "-f", "-"], input=commands.encode(), capture_output=True)
            if r.returncode != 0 and check:
                raise SystemError_(f"nftables: {r.stderr.decode(errors='replace').strip()}")
            return r.stdout.decode()
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0 and check:
            raise SystemError_(f"nftables: {err.strip() or 'command failed'}")
        return out

    def close(self) -> None:
        if self._lib is not None and self._ctx:
            self._lib.nft_ctx_free(self._ctx)
        self._lib, self._ctx = None, None
