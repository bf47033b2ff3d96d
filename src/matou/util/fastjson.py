"""JSON for the CLI's hot path without importing ``json`` (whose decoder pulls in ``re``: ~8 ms per command).

Uses the same C accelerators the ``json`` package uses (``_json.make_scanner``/``make_encoder``), so results
are identical to ``json.loads``/``json.dumps(separators=(",", ":"))`` for the Engine API's documents.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _DecodeContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scanner = _json.make_scanner(_DecodeContext())


class DecodeError(ValueError):
    pass


def loads(s: str | bytes) -> Any:
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8")
    n = len(s)
    i = 0
    while i < n and s[i] in " \t\r\n":
        i += 1
    try:
        obj, end = _scanner(s, i)
    except StopIteration:
        raise DecodeError(f"invalid JSON at position {i}") from None
    while end < n and s[end] in " \t\r\n":
        end += 1
    if end != n:
        raise DecodeError(f"extra data at position {end}")
    return obj


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o == float("inf"):
        return "Infinity"
    if o == -float("inf"):
        return "-Infinity"
    return float.__repr__(o)


def _default(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encoder = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)


def dumps(obj: Any) -> str:
    return "".join(_encoder(obj, 0))
