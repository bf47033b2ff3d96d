"""HTTP front ends: the OCI distribution API (/v2), /token, Docker's /v1 search, the management API, web pages."""
