"""matou's OCI distribution registry: a separate server that shares only errors, types and util with the engine.

Layout: ``storage/`` (blob bytes behind a StorageDriver protocol), ``index`` (SQLAlchemy Core metadata),
``auth/`` (passwords, tokens, the access policy), ``core`` (the operations, used by the HTTP API and the
offline CLI alike), ``api/`` (HTTP front ends), ``gc``, ``web/`` and ``cli``. See docs/registry.md.
"""
