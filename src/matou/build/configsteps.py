"""The instructions that only change the image config: ENV, LABEL, USER, EXPOSE, VOLUME, STOPSIGNAL, CMD,
ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER.

Each is a pure function of the stage state, the instruction and the expansion environment: it returns the
step's ``created_by`` (Docker's ``#(nop)`` form) and the new config section; the dispatcher commits it (or finds
it in the cache). Docker's quirks kept: ENTRYPOINT drops a CMD inherited from the base image, ENV and LABEL expand
every pair against the environment before the instruction, EXPOSE accepts ranges.
"""

from __future__ import annotations

import signal as _signal
from typing import Any

from matou.build import instructions as I
from matou.build.shell import Lexer
from matou.build.state import StageState, go_list, go_quote_list
from matou.errors import InvalidArgument

SIGNALS = {s.name for s in _signal.Signals}


def config_change(st: StageState, ins: I.Instruction, env: dict[str, str],
                  lex: Lexer) -> tuple[str, dict[str, Any]] | None:
    """(created_by, new config) of a config-only instruction, or None for the others."""
    x = lex.process_word
    cfg = dict(st.config)
    if isinstance(ins, (I.Env, I.Label)):
        pairs = [(x(k, env), x(v, env)) for k, v in ins.pairs]
        text = " ".join(f"{k}={v}" for k, v in pairs)
        if isinstance(ins, I.Env):
            envl = list(cfg.get("Env") or [])
            for k, v in pairs:
                envl = [e for e in envl if e.partition("=")[0] != k]
                envl.append(f"{k}={v}")
            cfg["Env"] = envl
            return st.nop("ENV " + text), cfg
        labels = dict(cfg.get("Labels") or {})
        labels.update(pairs)
        cfg["Labels"] = labels
        return st.nop("LABEL " + text), cfg
    if isinstance(ins, I.User):
        cfg["User"] = x(ins.value, env)
        return st.nop("USER " + cfg["User"]), cfg
    if isinstance(ins, I.Expose):
        words: list[str] = []
        for w in ins.words:
            words.extend(lex.process_words(w, env))
        ports = dict(cfg.get("ExposedPorts") or {})
        for w in words:
            for p in _ports(w):
                ports[p] = {}
        cfg["ExposedPorts"] = ports
        return st.nop("EXPOSE " + " ".join(words)), cfg
    if isinstance(ins, I.Volume):
        vols = [x(w, env) for w in ins.words]
        if any(not v.strip() for v in vols):
            raise InvalidArgument("VOLUME specified can not be an empty string")
        vd = dict(cfg.get("Volumes") or {})
        for v in vols:
            vd[v] = {}
        cfg["Volumes"] = vd
        return st.nop("VOLUME " + go_list(vols)), cfg
    if isinstance(ins, I.StopSignal):
        sig = x(ins.value, env)
        _check_signal(sig)
        cfg["StopSignal"] = sig
        return st.nop("STOPSIGNAL " + sig), cfg
    if isinstance(ins, (I.Cmd, I.Entrypoint)):
        argv = ins.exec_form if ins.exec_form is not None else st.shell + [ins.shell_form]
        if isinstance(ins, I.Cmd):
            cfg["Cmd"] = argv
            st.cmd_set = True
            what = "CMD"
        else:
            cfg["Entrypoint"] = argv
            if not st.cmd_set:
                cfg["Cmd"] = None
            what = "ENTRYPOINT"
        cfg["ArgsEscaped"] = None
        return st.nop(f"{what} {go_quote_list(argv)}"), cfg
    if isinstance(ins, I.Shell):
        cfg["Shell"] = list(ins.exec_form or [])
        return st.nop("SHELL " + go_list(cfg["Shell"])), cfg
    if isinstance(ins, I.Healthcheck):
        cfg["Healthcheck"] = _healthcheck(ins)
        return st.nop("HEALTHCHECK " + _healthcheck_text(cfg["Healthcheck"])), cfg
    if isinstance(ins, I.Onbuild):
        cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [ins.expression]
        return st.nop("ONBUILD " + ins.expression), cfg
    if isinstance(ins, I.Maintainer):
        st.author = ins.value
        return st.nop("MAINTAINER " + ins.value), cfg
    return None


def _ports(word: str) -> list[str]:
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    if ":" in port:
        raise InvalidArgument(f"invalid containerPort: {word} (EXPOSE takes container ports only)")
    lo, _, hi = port.partition("-")
    try:
        a = int(lo)
        b = int(hi) if hi else a
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {port}") from None
    if not (0 < a <= 65535 and 0 < b <= 65535) or b < a:
        raise InvalidArgument(f"invalid port range: {port}")
    return [f"{p}/{proto}" for p in range(a, b + 1)]


def _check_signal(sig: str) -> None:
    if sig.isdigit():
        if not 0 < int(sig) < 65:
            raise InvalidArgument(f"Invalid signal: {sig}")
        return
    name = sig.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in SIGNALS and not name.startswith("SIGRTMIN") and not name.startswith("SIGRTMAX"):
        raise InvalidArgument(f"Invalid signal: {sig}")


def _healthcheck(ins: I.Healthcheck) -> dict[str, Any]:
    if ins.kind == "NONE":
        return {"Test": ["NONE"]}
    cmd = ins.command
    assert cmd is not None
    test = (["CMD"] + list(cmd.exec_form)) if cmd.exec_form is not None else ["CMD-SHELL", cmd.shell_form]
    hc: dict[str, Any] = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                      ("start-interval", "StartInterval")):
        v = ins.flag(flag)
        if v:
            d = I.parse_duration(v)
            if d:
                hc[key] = d
    r = ins.flag("retries")
    if r:
        hc["Retries"] = int(r)
    return hc


def _dur(ns: int) -> str:
    if not ns:
        return "0s"
    s = ns / 1e9
    return f"{s:g}s"


def _healthcheck_text(hc: dict[str, Any]) -> str:
    return (f"&{{{go_quote_list(hc['Test'])} \"{_dur(hc.get('Interval', 0))}\" \"{_dur(hc.get('Timeout', 0))}\" "
            f"\"{_dur(hc.get('StartPeriod', 0))}\" \"{_dur(hc.get('StartInterval', 0))}\" '\\x{hc.get('Retries', 0):02x}'}}")
