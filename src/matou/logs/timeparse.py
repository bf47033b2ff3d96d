"""RFC 3339 timestamps with nanoseconds -> float seconds, quickly (log lines are parsed by the thousand)."""

from __future__ import annotations

import calendar


def parse_ts(s: str) -> float:
    # 2026-11-28T01:02:03.123456789Z
    try:
        base = calendar.timegm((int(s[0:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]), int(s[14:16]),
                                int(s[17:19]), 0, 0, 0))
    except (ValueError, IndexError):
        return 0.0
    frac = 0.0
    if len(s) > 19 and s[19] == ".":
        j = 20
        while j < len(s) and s[j].isdigit():
            j += 1
        frac = float("0." + s[20:j]) if j > 20 else 0.0
    return base + frac
