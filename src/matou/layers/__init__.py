"""Image layers as tar streams: apply (pull, ``docker cp`` in, ADD) and write (commit, export, ``cp`` out, COPY).

Public interface (import from the submodules; this package imports nothing so that callers pay only for what
they use):

- ``compression``: ``detect``, ``decompressing_reader``, ``compressing_writer`` (gzip via isal, zstd, plain);
- ``apply``: ``apply_layer`` (a layer into its own empty directory, overlay whiteouts), ``apply_tar_into`` (an
  archive onto an existing tree), ``ApplyResult``;
- ``diff``: ``write_diff`` (overlay upper dir -> layer tar), ``write_tree`` (directory or paths -> tar),
  ``changes`` (``docker diff``), ``DiffResult``.

Inside: ``stream`` (decompress + hash in worker threads), ``tarread`` (lean tar reader), ``extract`` (safe,
syscall-lean writes; the escape rules and supported entry types are listed there), ``worker`` and ``filework``
(a helper process that creates small files for ``extract``, parent and child side), ``tarfmt`` (header bytes).
Everything is synchronous, thread-safe and keeps no module state: call it from worker threads or processes.
Only ``matou.errors``, ``matou.types`` and ``matou.util`` are imported from the project.
"""
