"""The `matou` command: docker-compatible commands, resolved lazily.

Start-up time is latency on every command, so this module imports only the standard library pieces it
needs; each command's module is imported when that command runs. The table maps a command word to
``module:function``; functions take ``(ctx, argv)`` (the words after the command) and return an exit code.
"""

from __future__ import annotations

import sys

_C = "matou.cli.commands."
# command word -> (module, function)
COMMANDS: dict[str, tuple[str, str]] = {
    "version": (_C + "system", "version"),
    "info": (_C + "system", "info"),
    "daemon": (_C + "system", "daemon"),
    "system": (_C + "system", "system"),
    "events": (_C + "system", "events"),
    "images": (_C + "images", "images"),
    "image": (_C + "images", "image"),
    "tag": (_C + "images", "tag"),
    "rmi": (_C + "images", "rmi"),
    "save": (_C + "images", "save"),
    "load": (_C + "images", "load"),
    "import": (_C + "images", "import_"),
    "history": (_C + "images", "history"),
    "inspect": (_C + "inspect", "inspect"),
    "run": (_C + "run", "run"),
    "create": (_C + "run", "create"),
    "start": (_C + "run", "start"),
    "stop": (_C + "containers", "stop"),
    "restart": (_C + "containers", "restart"),
    "kill": (_C + "containers", "kill"),
    "rm": (_C + "containers", "rm"),
    "ps": (_C + "containers", "ps"),
    "logs": (_C + "containers", "logs"),
    "attach": (_C + "containers", "attach"),
    "exec": (_C + "containers", "exec_"),
    "wait": (_C + "containers", "wait"),
    "top": (_C + "containers", "top"),
    "pause": (_C + "containers", "pause"),
    "unpause": (_C + "containers", "unpause"),
    "rename": (_C + "containers", "rename"),
    "cp": (_C + "containers", "cp"),
    "diff": (_C + "containers", "diff"),
    "commit": (_C + "containers", "commit"),
    "export": (_C + "containers", "export"),
    "stats": (_C + "containers", "stats"),
    "port": (_C + "containers", "port"),
    "update": (_C + "containers", "update"),
    "container": (_C + "containers", "container"),
    "volume": (_C + "volumes", "volume"),
    "network": (_C + "networks", "network"),
    "build": (_C + "build", "build"),
    "builder": (_C + "build", "builder"),
    "pull": (_C + "distribution", "pull"),
    "push": (_C + "distribution", "push"),
    "login": (_C + "distribution", "login"),
    "logout": (_C + "distribution", "logout"),
    "search": (_C + "distribution", "search"),
}

# command groups shown in help, like docker's
HELP = """
Usage:  matou [OPTIONS] COMMAND

A container engine with Docker's commands and API

Common Commands:
  run         Create and run a new container from an image
  exec        Execute a command in a running container
  ps          List containers
  build       Build an image from a Dockerfile
  pull        Download an image from a registry
  push        Upload an image to a registry
  images      List images
  login       Log in to a registry
  logout      Log out from a registry
  search      Search a registry for images
  version     Show the matou version information
  info        Display system-wide information

Management Commands:
  builder     Manage builds
  container   Manage containers
  image       Manage images
  network     Manage networks
  registry    Run and administer a matou registry
  system      Manage matou
  volume      Manage volumes

Commands:
  attach      Attach local standard input, output, and error streams to a running container
  commit      Create a new image from a container's changes
  cp          Copy files/folders between a container and the local filesystem
  create      Create a new container
  daemon      Run matoud in the foreground
  diff        Inspect changes to files or directories on a container's filesystem
  events      Get real time events from the server
  export      Export a container's filesystem as a tar archive
  history     Show the history of an image
  import      Import the contents from a tarball to create a filesystem image
  inspect     Return low-level information on objects
  kill        Kill one or more running containers
  load        Load an image from a tar archive or STDIN
  logs        Fetch the logs of a container
  pause       Pause all processes within one or more containers
  port        List port mappings or a specific mapping for the container
  rename      Rename a container
  restart     Restart one or more containers
  rm          Remove one or more containers
  rmi         Remove one or more images
  save        Save one or more images to a tar archive (streamed to STDOUT by default)
  start       Start one or more stopped containers
  stats       Display a live stream of container(s) resource usage statistics
  stop        Stop one or more running containers
  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
  top         Display the running processes of a container
  unpause     Unpause all processes within one or more containers
  update      Update configuration of one or more containers
  wait        Block until one or more containers stop, then print their exit codes

Global Options:
  -H, --host string   Daemon socket to connect to (default unix:///run/matou/matou.sock, or $MATOU_HOST)
  -D, --debug         Enable debug mode
  -v, --version       Print version information and quit
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    host = None
    debug = False
    # global flags come before the command word
    while args and args[0].startswith("-"):
        a = args.pop(0)
        if a in ("-H", "--host"):
            if not args:
                sys.stderr.write("flag needs an argument: --host\n")
                return 125
            host = args.pop(0)
        elif a.startswith("--host="):
            host = a.split("=", 1)[1]
        elif a in ("-D", "--debug"):
            debug = True
        elif a in ("-v", "--version"):
            import matou

            sys.stdout.write(f"matou version {matou.__version__}\n")
            return 0
        elif a in ("-h", "--help"):
            sys.stdout.write(HELP)
            return 0
        else:
            sys.stderr.write(f"unknown flag: {a}\nSee 'matou --help'.\n")
            return 125
    if not args or args[0] == "help":
        sys.stdout.write(HELP)
        return 0
    cmd = args[0]
    entry = COMMANDS.get(cmd)
    if entry is None:
        if cmd == "registry":
            from matou.registry.cli import main as registry_main

            return int(registry_main(args[1:]) or 0)
        sys.stderr.write(f"matou: '{cmd}' is not a matou command.\nSee 'matou --help'\n")
        return 1
    from matou.cli.context import Ctx
    from matou.client.http import APIError, ConnectError

    ctx = Ctx(host=host, debug=debug)
    try:
        try:
            # __import__ rather than importlib.import_module: importlib drags in warnings (~1 ms of start-up)
            mod = __import__(entry[0], fromlist=["_"])
        except ModuleNotFoundError as e:
            if e.name != entry[0]:
                raise
            sys.stderr.write(f"matou: '{cmd}' is not available in this build yet\n")
            return 1
        return int(getattr(mod, entry[1])(ctx, args[1:]) or 0)
    except APIError as e:
        sys.stderr.write(f"Error response from daemon: {e.message}\n")
        return 1
    except ConnectError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """The installed command: main(), then leave without the interpreter's teardown. Finalizing modules and
    objects costs ~2.5 ms on every command and does nothing a finished command needs (files are closed by
    ``with``, the CLI registers no atexit hooks); only the standard streams need flushing."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    import posix

    posix._exit(code)


if __name__ == "__main__":
    run()
