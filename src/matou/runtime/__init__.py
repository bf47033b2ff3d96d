"""matou's OCI runtime: runs bundles (config.json + rootfs) the way runc does, in-process.

The life cycle and the interface (``Runtime``: create/start/state/kill/delete/exec/pause/resume/update/stats/
pids/oom_killed) are documented in ``api.py``. Implementations: ``builtin.BuiltinRuntime(root)`` (this package,
for a single-threaded caller such as the per-container monitor) and ``ocicli.OciCliRuntime(binary, root)`` (runc
or crun). ``spec.default_spec`` writes Docker's default config.json; ``users.resolve_user`` turns ``--user`` into
ids. ``python -m matou.runtime`` is a runc-compatible CLI over the same code.

This package imports only matou.errors, matou.types, matou.util and the standard library (no asyncio, no HTTP).
"""
