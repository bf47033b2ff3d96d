"""Relaying between a hijacked client connection and a monitor's attach or exec stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from matou.daemon.api.hijack import Hijacked
from matou.monitor import protocol as P


async def relay(client: Hijacked, mreader: asyncio.StreamReader, mwriter: asyncio.StreamWriter, *, tty: bool,
                stdin: bool, detach_keys: bytes | None) -> dict[str, Any]:
    """Pump both ways until the monitor ends the stream, the client detaches, or the client goes away.
    Returns the last control message (e.g. {"exit_code": 0}) or {"detached": True}."""
    result: dict[str, Any] = {}
    detached = asyncio.Event()

    async def from_monitor() -> None:
        parser = P.FrameParser()
        while True:
            data = await mreader.read(65536)
            if not data:
                return
            for stream, payload in parser.feed(data):
                if stream == P.CONTROL:
                    with contextlib.suppress(ValueError):
                        result.update(json.loads(payload))
                    if "error" in result and "exit_code" not in result and not tty:
                        await client.write(P.frame(P.STDERR, (result["error"] + "\n").encode()))
                    continue
                if tty:
                    await client.write(payload)
                else:
                    await client.write(P.frame(stream, payload))

    async def from_client() -> None:
        matched = 0
        while True:
            data = await client.read()
            if not data:
                if stdin:
                    with contextlib.suppress(OSError, RuntimeError):
                        if mwriter.can_write_eof():
                            mwriter.write_eof()
                return
            if not stdin:
                continue
            if detach_keys:
                out = bytearray()
                for b in data:
                    if b == detach_keys[matched]:
                        matched += 1
                        if matched == len(detach_keys):
                            detached.set()
                            return
                        continue
                    if matched:
                        out += detach_keys[:matched]
                        matched = 0
                    out.append(b)
                data = bytes(out)
            if data:
                mwriter.write(data)
                await mwriter.drain()

    t_out = asyncio.ensure_future(from_monitor())
    t_in = asyncio.ensure_future(from_client())
    t_det = asyncio.ensure_future(detached.wait())
    t_gone = asyncio.ensure_future(client.closed.wait())
    try:
        waiting = {t_out, t_det, t_gone}
        while True:
            done, _ = await asyncio.wait(waiting | ({t_in} if not t_in.done() else set()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if t_out in done or t_det in done or t_gone in done:
                break
            # t_in finished (stdin EOF): keep streaming output
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        for t in (t_out, t_in, t_det, t_gone):
            t.cancel()
        with contextlib.suppress(Exception):
            mwriter.close()
    if detached.is_set():
        result["detached"] = True
    with contextlib.suppress(Exception):
        if t_out.done() and t_out.exception() is None:
            pass
    return result
