"""Malformed input fails with its line number and changes no image and no tag."""

from __future__ import annotations

import os

import pytest

from tests.build.conftest import Build, image_ids, write_context
from tests.conftest import Daemon

CASES = [
    ("unknown-instruction", "FROM busybox\nRUN echo ok\nFOO bar\n", 1, ["line 3", "unknown instruction: FOO"]),
    ("unterminated-heredoc", "FROM busybox\nRUN echo ok\nRUN <<EOF\necho never\n", 1,
     ["line 3", "unterminated heredoc"]),
    ("bad-json", "FROM busybox\nCMD [\"sh\", \"-c\"\n", 1, ["line 2", "invalid JSON form"]),
    ("no-from", "ARG X=1\nRUN echo x\n", 1, ["line 2", "no build stage"]),
    ("outside-context", "FROM busybox\nRUN echo before > /before\nCOPY ../secret /x\n", 1,
     ["Dockerfile:3", "forbidden path outside the build context: ../secret"]),
    ("unknown-stage", "FROM busybox AS a\nRUN echo a\nFROM busybox\nCOPY --from=nostage /x /x\n", 1,
     ["Dockerfile:4", "nostage"]),
    ("run-fails", "FROM busybox\nRUN echo before > /before\nRUN exit 7\nRUN echo after\n", 7,
     ["Dockerfile:3", "The command '/bin/sh -c exit 7' returned a non-zero code: 7"]),
    ("missing-source", "FROM busybox\nCOPY nope /x\n", 1, ["Dockerfile:2", "file not found in build context"]),
]


@pytest.mark.parametrize("name,text,code,needles", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_changes_nothing(daemon: Daemon, build: Build, tmp_path: str, name: str, text: str,
                                         code: int, needles: list[str]) -> None:
    ctx = write_context(os.path.join(str(tmp_path), name), {"Dockerfile": text + f"# {name}\n"})
    before = image_ids(daemon)
    r = build(ctx, "--network", "none", "-t", f"bt-err-{name}", check=False)
    assert r.returncode == code, r.stdout + r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert image_ids(daemon) == before
    assert daemon.cli("image", "inspect", f"bt-err-{name}", check=False).returncode != 0


def test_docker_style_error_for_failed_run_is_streamed(daemon: Daemon, build: Build, tmp_path: str) -> None:
    ctx = write_context(os.path.join(str(tmp_path), "s"), {"Dockerfile": "FROM busybox\nRUN echo visible; exit 3\n"})
    r = build(ctx, "--network", "none", check=False)
    assert r.returncode == 3
    assert "Step 2/2 : RUN echo visible; exit 3" in r.stdout and "visible" in r.stdout
    assert "returned a non-zero code: 3" in r.stderr
