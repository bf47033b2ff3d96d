"""The registry client: OCI distribution and Docker's token auth over a small synchronous HTTP client.

``endpoints`` decides where a reference's registry is (Docker Hub's names, mirrors, insecure registries), ``http``
moves the bytes (pooled connections, sendfile uploads), ``auth`` speaks challenges and tokens, ``client`` has the
distribution calls, ``progress`` builds Docker's JSON progress messages. Pull and push themselves, which need the
content store and the image service, live in ``matou.image.pull`` and ``matou.image.push``.
"""
