"""Frozen records and grammars shared by every part of matou (no I/O, no project imports)."""
