"""nftables through libnftables (ctypes), with the ``nft`` binary as a fallback.

In-process libnftables saves the ~5 ms fork+exec of ``nft`` per call; a published port costs one small command
(adding map elements). Every batch is one nftables transaction: it applies whole or not at all.
Not thread-safe: the network service calls it from its one worker thread.
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
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            if shutil.which("nft") is None:
                raise SystemError_("nftables is not available: install the nftables package") from None
            return
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
            raise SystemError_("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self._lib, self._ctx = lib, ctx

    def run(self, commands: str, check: bool = True) -> str:
        """Run a batch (nft -f syntax) as one transaction; returns the output. Raises SystemError_ on failure."""
        if self._lib is None:
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
