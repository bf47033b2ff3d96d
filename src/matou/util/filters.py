"""Docker's ``filters`` query parameter: JSON of {key: [values]} or the older {key: {value: true}}."""

from __future__ import annotations

import json
from typing import Any

from matou.errors import InvalidArgument


def parse(raw: str | None, allowed: set[str] | None = None) -> dict[str, list[str]]:
    if not raw:
        return {}
    try:
        data: Any = json.loads(raw)
    except ValueError:
        raise InvalidArgument(f"invalid filter: {raw!r} is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("invalid filter: expected a JSON object")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        if allowed is not None and k not in allowed:
            raise InvalidArgument(f"invalid filter '{k}'")
        if isinstance(v, dict):
            out[k] = [str(x) for x, on in v.items() if on]
        elif isinstance(v, list):
            out[k] = [str(x) for x in v]
        elif isinstance(v, str):
            out[k] = [v]
        else:
            raise InvalidArgument(f"invalid filter '{k}'")
    return out


def bool_value(values: list[str], key: str) -> bool:
    v = values[-1].lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={values[-1]}'")


def labels_match(labels: dict[str, str] | None, wanted: list[str], negate: bool = False) -> bool:
    labels = labels or {}
    for w in wanted:
        k, eq, v = w.partition("=")
        hit = k in labels and (not eq or labels[k] == v)
        if hit == negate:
            return False
    return True


def glob_match(pattern: str, value: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(value, pattern)
