"""Docker's detach keys ("ctrl-p,ctrl-q"), parsed the same way by the CLI and the daemon."""

from __future__ import annotations


def parse(spec: str | None) -> bytes | None:
    """Docker's --detach-keys: "ctrl-p,ctrl-q" (default), "ctrl-a,x", "" disables."""
    if spec is None:
        spec = "ctrl-p,ctrl-q"
    if spec == "":
        return None
    out = bytearray()
    for part in spec.split(","):
        p = part.strip()
        if len(p) == 1:
            out.append(ord(p))
        elif p.lower().startswith("ctrl-") and len(p) == 6:
            ch = p[5]
            if ch == "@":
                out.append(0)
            elif ch.isalpha():
                out.append(ord(ch.lower()) - ord("a") + 1)
            elif ch in "[\\]^_":
                out.append(ord(ch) - 64)
            else:
                raise ValueError(f"Unknown character: '{p}'")
        else:
            raise ValueError(f"Unknown character: '{p}'")
    return bytes(out)
