"""Docker's stats JSON from the runtime's cgroup readings."""

from __future__ import annotations

import os
from typing import Any

from matou.types.image import rfc3339


def docker_stats(c: Any, raw: dict[str, Any], precpu: dict[str, Any] | None = None) -> dict[str, Any]:
    mem = raw.get("memory") or {}
    cpu = raw.get("cpu") or {}
    usage = cpu.get("usage") or {}
    pids = raw.get("pids") or {}
    ncpu = raw.get("online_cpus") or os.cpu_count() or 1
    limit = int(mem.get("limit") or 0)
    if not limit or limit > (1 << 62):
        try:
            limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            limit = 0
    stats = mem.get("stats") or {}
    cpu_stats = {
        "cpu_usage": {"total_usage": int(usage.get("total") or 0), "percpu_usage": usage.get("percpu") or None,
                      "usage_in_kernelmode": int(usage.get("kernel") or 0),
                      "usage_in_usermode": int(usage.get("user") or 0)},
        "system_cpu_usage": int(raw.get("system_cpu_usage") or 0),
        "online_cpus": ncpu,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    return {
        "read": rfc3339(),
        "preread": "0001-01-01T00:00:00Z",
        "pids_stats": {"current": int(pids.get("current") or 0), **({"limit": pids["limit"]} if pids.get("limit") else {})},
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None,
                        "io_queue_recursive": None, "io_service_time_recursive": None,
                        "io_wait_time_recursive": None, "io_merged_recursive": None, "io_time_recursive": None,
                        "sectors_recursive": None},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats,
        "precpu_stats": precpu or {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                                   "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "memory_stats": ({"usage": int(mem.get("usage") or 0), "max_usage": int(mem.get("max_usage") or 0),
                          "stats": stats, "failcnt": int(mem.get("failcnt") or 0), "limit": limit}
                         if mem else {}),
        "name": "/" + c.name,
        "id": c.id,
        "networks": raw.get("networks") or {},
    }
