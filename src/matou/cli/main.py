"""The `matou` command: docker-compatible commands, resolved lazily.

Start-up time is latency on every command, so this module imports only the standard library pieces it
needs; each command's module is imported when that command runs. The table maps a command word to
``module:function``; functions take ``argv`` (the words after the command) and return an exit code.
"""

from __future__ import annotations

import sys

# command word -> (module, function). Aliases point to the same entry.
COMMANDS: dict[str, tuple[str, str]] = {
    "registry": ("matou.registry.cli", "main"),
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write("Usage: matou COMMAND [OPTIONS]\n\nCommands:\n")
        for name in sorted(COMMANDS):
            sys.stdout.write(f"  {name}\n")
        return 0
    cmd = args[0]
    entry = COMMANDS.get(cmd)
    if entry is None:
        sys.stderr.write(f"matou: '{cmd}' is not a matou command.\nSee 'matou --help'\n")
        return 1
    import importlib

    mod = importlib.import_module(entry[0])
    return int(getattr(mod, entry[1])(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
