"""`ps --filter`: Docker's container filters."""

from __future__ import annotations

import re
from typing import Any

from matou.errors import InvalidArgument
from matou.types.image import parse_time
from matou.util import filters as flt

ALLOWED = {"id", "name", "label", "label!", "exited", "status", "ancestor", "before", "since", "volume", "network",
           "publish", "expose", "health", "isolation", "is-task"}
STATUSES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}


def match(svc: Any, c: Any, raw: str, include_stopped: bool) -> bool:
    f = flt.parse(raw, ALLOWED)
    st = c.state.Status
    if "status" in f:
        for s in f["status"]:
            if s not in STATUSES:
                raise InvalidArgument(f"invalid filter 'status={s}'")
        if st not in f["status"]:
            return False
    elif not include_stopped and not c.state.Running and "exited" not in f:
        return False
    if "id" in f and not any(c.id.startswith(v) for v in f["id"]):
        return False
    if "name" in f and not any(re.search(v, c.name) for v in f["name"]):
        return False
    if "label" in f and not flt.labels_match(c.config.get("Labels"), f["label"]):
        return False
    if "label!" in f and not flt.labels_match(c.config.get("Labels"), f["label!"], negate=True):
        return False
    if "exited" in f:
        try:
            codes = {int(x) for x in f["exited"]}
        except ValueError:
            raise InvalidArgument("invalid filter 'exited'") from None
        if c.state.Running or st != "exited" or c.state.ExitCode not in codes:
            return False
    if "ancestor" in f:
        ok = False
        for a in f["ancestor"]:
            img = svc.images.lookup(a)
            if img is not None and (img.id == c.image_id or _descends(svc, c.image_id, img.id)):
                ok = True
            if c.config.get("Image") == a:
                ok = True
        if not ok:
            return False
    for key, later in (("before", False), ("since", True)):
        if key in f:
            other = svc.get(f[key][-1])
            t, o = parse_time(c.created), parse_time(other.created)
            if (later and t <= o) or (not later and t >= o):
                return False
    if "volume" in f and not any(m.get("Name") in f["volume"] or m.get("Destination") in f["volume"]
                                 or m.get("Source") in f["volume"] for m in c.mounts):
        return False
    if "network" in f:
        nets = set(c.networks) | {n.get("NetworkID", "") for n in c.networks.values()}
        if not any(v in nets or any(x.startswith(v) for x in nets if x) for v in f["network"]):
            return False
    if "expose" in f:
        exposed = set((c.config.get("ExposedPorts") or {}).keys())
        if not any((v if "/" in v else v + "/tcp") in exposed for v in f["expose"]):
            return False
    if "publish" in f:
        ports = c.network_settings.get("Ports") or {}
        pub = set()
        for k, b in ports.items():
            for x in b or []:
                pub.add(f"{x.get('HostPort')}/{k.split('/')[1]}")
        if not any((v if "/" in v else v + "/tcp") in pub or v in ports for v in f["publish"]):
            return False
    if "health" in f and "none" not in f["health"]:
        return False
    return True


def _descends(svc: Any, image_id: str, ancestor: str) -> bool:
    cur = image_id
    seen = set()
    while cur and cur not in seen:
        seen.add(cur)
        if cur == ancestor:
            return True
        if not svc.images.exists(cur):
            return False
        cur = svc.images.get(cur).parent
    return False
