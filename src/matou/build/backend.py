"""What the builder needs from the rest of the engine, as a small protocol (the daemon implements it).

The builder owns images, layers and the cache directly (``matou.image``, ``matou.store``); it reaches containers
and registries only through this protocol, so ``matou.build`` never imports the daemon.

Lifecycle of a RUN step::

    result = await backend.run(spec, on_output, on_created)   # create + start + stream output + wait; the container stays
    ... commit result.snapshot (its read-write snapshot) as the step's layer, or discard it ...
    await backend.remove(result.container_id)       # always, also on failure (the snapshot may be gone by then)

``pull`` fetches a base image that is not local (FROM, COPY --from, --pull); it returns the image ID, or None when
this engine has no registry client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

OutputFn = Callable[[int, bytes], Awaitable[None] | None]  # (1 stdout | 2 stderr, bytes)
CreatedFn = Callable[[str], Awaitable[None]]  # told the container ID before its first output
Emit = Callable[[dict[str, Any]], Awaitable[None]]  # one JSON message of the build's output stream


@dataclass
class Bind:
    source: str  # host path
    target: str  # path in the container
    readonly: bool = True


@dataclass
class RunSpec:
    image_id: str
    argv: list[str]
    env: list[str]
    workdir: str = ""
    user: str = ""
    network: str = "default"  # default | bridge | none | host
    binds: list[Bind] = field(default_factory=list)
    tmpfs: dict[str, str] = field(default_factory=dict)
    privileged: bool = False
    host_config: dict[str, Any] = field(default_factory=dict)  # resource limits etc. from the build options


@dataclass
class RunResult:
    container_id: str
    exit_code: int
    snapshot: str  # the container's read-write snapshot key: its upper dir is the step's layer


class BuildBackend(Protocol):
    async def run(self, spec: RunSpec, on_output: OutputFn, on_created: CreatedFn | None = None) -> RunResult: ...

    async def remove(self, container_id: str) -> None: ...

    async def pull(self, ref: str, auth: dict[str, Any] | None, emit: Emit) -> str | None: ...
