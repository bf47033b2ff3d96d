"""The state of a build stage between steps, and the image config each step commits.

A stage carries what Docker's legacy builder calls the run config (the image config's ``config`` section), the
history and layers so far, the build args in scope and a few flags. Each step commits a child image of the
previous one: same layers (plus the step's, if any), the new config, one more history entry whose ``created_by``
reads like Docker's (``/bin/sh -c #(nop)  ENV A=b``, ``|1 X=y /bin/sh -c make``), ``empty_layer`` when the
step added no layer.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from matou.build.instructions import Stage
from matou.image.model import Image, LayerSource
from matou.types.image import rfc3339
from matou.types.oci import Platform

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")
CONFIG_ORDER = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal",
                "ArgsEscaped", "Healthcheck", "OnBuild", "Shell")


@dataclass
class StageState:
    stage: Stage
    image_id: str | None  # None: FROM scratch and nothing committed yet
    config: dict[str, Any]
    history: list[dict[str, Any]]
    layers: list[LayerSource]
    platform: Platform
    author: str = ""
    cmd_set: bool = False
    args: dict[str, str | None] = field(default_factory=dict)  # declared in this stage -> value
    missed: bool = False  # a step of this stage ran (so every later key has a new parent)

    @property
    def diff_ids(self) -> list[str]:
        return [lyr.diff_id for lyr in self.layers]

    @property
    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    @property
    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in self.config.get("Env") or []:
            k, _, v = e.partition("=")
            out[k] = v
        return out

    def nop(self, text: str, two_spaces: bool = True) -> str:
        """Docker's ``created_by`` of a step that runs nothing."""
        return " ".join(self.shell) + (" #(nop)  " if two_spaces else " #(nop) ") + text


def begin(stage: Stage, img: Image | None, layers: list[LayerSource]) -> StageState:
    """A stage's state from its base image (None for scratch), with Docker's default PATH when there is none."""
    if img is None:
        st = StageState(stage, None, {}, [], [], Platform.host())
    else:
        cfg = img.config
        plat = Platform(cfg.get("os") or "linux", cfg.get("architecture") or Platform.host().architecture,
                        cfg.get("variant"))
        st = StageState(stage, img.id, copy.deepcopy(cfg.get("config") or {}), list(cfg.get("history") or []),
                        list(layers), plat, author=cfg.get("author") or "")
    env = list(st.config.get("Env") or [])
    if not any(e.startswith("PATH=") for e in env):
        env.append("PATH=" + DEFAULT_PATH)
    st.config["Env"] = env
    for k in ("OpenStdin", "StdinOnce", "AttachStdin", "Image", "Hostname", "Domainname"):
        st.config.pop(k, None)
    return st


def reload(st: StageState, img: Image, layers: list[LayerSource]) -> None:
    """Continue from an image (a cache hit): its config, history and layers replace the stage's."""
    cfg = img.config
    st.image_id = img.id
    st.config = copy.deepcopy(cfg.get("config") or {})
    st.history = list(cfg.get("history") or [])
    st.layers = list(layers)
    st.author = cfg.get("author") or st.author


def compact(config: dict[str, Any]) -> dict[str, Any]:
    """The config section as OCI images store it: known keys in a fixed order, empty values left out."""
    out: dict[str, Any] = {}
    for k in CONFIG_ORDER:
        v = config.get(k)
        if v is None or v == "" or v == {} or (v == [] and k not in ("Cmd", "Entrypoint")) or v is False:
            continue
        out[k] = v
    return out


def image_config(st: StageState, config: dict[str, Any], created_by: str, layers: list[LayerSource],
                 empty_layer: bool, created: float | None = None) -> bytes:
    """The config blob of the image a step commits (its digest is the image ID)."""
    when = rfc3339(created)
    entry: dict[str, Any] = {"created": when, "created_by": created_by}
    if st.author:
        entry["author"] = st.author
    if empty_layer:
        entry["empty_layer"] = True
    doc: dict[str, Any] = {"architecture": st.platform.architecture}
    if st.author:
        doc["author"] = st.author
    doc["config"] = compact(config)
    doc["created"] = when
    doc["history"] = st.history + [entry]
    doc["os"] = st.platform.os
    doc["rootfs"] = {"type": "layers", "diff_ids": [lyr.diff_id for lyr in layers]}
    if st.platform.variant:
        doc["variant"] = st.platform.variant
    return json.dumps(doc, separators=(",", ":")).encode()


def config_digest(config: dict[str, Any]) -> str:
    """A stable text of a config section, for cache keys."""
    return json.dumps(compact(config), sort_keys=True, separators=(",", ":"))


def go_quote_list(items: list[str]) -> str:
    """Go's ``fmt.Sprintf("%q", []string{...})``: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(x, ensure_ascii=False) for x in items) + "]"


def go_list(items: list[str]) -> str:
    """Go's ``%v`` of a []string: ``[a b]``."""
    return "[" + " ".join(items) + "]"


def automatic_args(platform: str) -> dict[str, str | None]:
    """BuildKit's automatic platform ARGs (usable in FROM lines, and in a stage after ``ARG NAME``)."""
    host = Platform.host()
    target = Platform.parse(platform) if platform else host
    out: dict[str, str | None] = {}
    for prefix, p in (("BUILD", host), ("TARGET", target)):
        out[prefix + "PLATFORM"] = f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")
        out[prefix + "OS"] = p.os
        out[prefix + "ARCH"] = p.architecture
        out[prefix + "VARIANT"] = p.variant or ""
    return out
