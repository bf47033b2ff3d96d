"""The Dockerfile parser, typed instructions and word expansion (no daemon)."""

from __future__ import annotations

import pytest

from matou.build import instructions as I
from matou.build.instructions import parse_duration, parse_text
from matou.build.parser import DockerfileError, parse
from matou.build.shell import ExpansionError, Lexer


def test_directives_comments_continuations() -> None:
    r = parse("# syntax=docker/dockerfile:1\n# escape=`\n\nFROM busybox\nRUN echo a `\n  # dropped\n\n  && echo b\n"
              "# comment\n  run   echo c\n")
    assert r.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    assert r.escape == "`"
    assert [n.keyword for n in r.nodes] == ["FROM", "RUN", "RUN"]
    assert r.nodes[1].args == "echo a   && echo b"
    assert (r.nodes[1].line, r.nodes[1].end_line) == (5, 8)
    assert r.nodes[2].line == 10 and r.nodes[2].col == 3
    assert any("Empty continuation line" in w for w in r.warnings)


def test_directive_only_at_top() -> None:
    r = parse("FROM busybox\n# escape=`\nRUN echo \\\n x\n")
    assert r.escape == "\\" and r.directives == {}
    assert r.nodes[1].args == "echo  x"
    with pytest.raises(DockerfileError, match="only one escape parser directive"):
        parse("# escape=`\n# escape=\\\nFROM x\n")


def test_heredocs() -> None:
    df = parse_text("FROM busybox\nRUN <<EOF\necho hi\nEOF\nCOPY <<-'A' <<B /dst/\n\tno $X\n\tA\nyes $X\nB\n"
                    "RUN [\"echo\", \"<<notadoc\"]\n")
    run, copy, js = df.stages[0].instructions
    assert isinstance(run, I.Run) and run.heredocs[0].content == "echo hi\n" and run.heredocs[0].expand
    assert isinstance(copy, I.Copy) and copy.dest == "/dst/"
    a, b = copy.heredocs
    assert (a.name, a.content, a.expand, a.chomp) == ("A", "no $X\n", False, True)
    assert (b.name, b.content, b.expand) == ("B", "yes $X\n", True)
    assert isinstance(js, I.Run) and js.exec_form == ["echo", "<<notadoc"] and not js.heredocs


def test_unterminated_heredoc_names_line() -> None:
    with pytest.raises(DockerfileError) as e:
        parse_text("FROM busybox\n\nRUN <<EOF\necho hi\n")
    assert e.value.line == 3 and "unterminated heredoc" in str(e.value) and "line 3" in str(e.value)


@pytest.mark.parametrize("text,line,msg", [
    ("FROM busybox\nFOO bar\n", 2, "unknown instruction: FOO"),
    ("RUN echo\nFROM busybox\n", 1, "no build stage"),
    ("ARG X=1\n", 1, "no FROM"),
    ("FROM busybox\nCMD [\"a\", \n", 2, "invalid JSON form"),
    ("FROM busybox\nCMD ['sh']\n", 2, "invalid JSON form"),
    ("FROM busybox\nSHELL /bin/bash\n", 2, "JSON form"),
    ("FROM busybox\nCOPY onlyone\n", 2, "at least two arguments"),
    ("FROM busybox\nCOPY --bogus=1 a b\n", 2, "unknown flag: --bogus"),
    ("FROM busybox\nENV\n", 2, "ENV requires at least one argument"),
    ("FROM busybox\nENV a=1 b\n", 2, "can't find ="),
    ("FROM busybox AS 1bad\n", 1, "invalid name for build stage"),
    ("FROM a AS x\nFROM b AS x\n", 2, "duplicate stage name"),
    ("FROM busybox\nONBUILD ONBUILD RUN x\n", 2, "isn't allowed"),
    ("FROM busybox\nONBUILD FROM x\n", 2, "isn't allowed as an ONBUILD trigger"),
    ("FROM busybox\nHEALTHCHECK --interval=1x CMD true\n", 2, "invalid duration"),
    ("FROM busybox\nHEALTHCHECK FOO\n", 2, "Unknown type"),
    ("FROM busybox\nSTOPSIGNAL a b\n", 2, "exactly one"),
])
def test_malformed(text: str, line: int, msg: str) -> None:
    with pytest.raises(DockerfileError) as e:
        parse_text(text, "Dockerfile.test")
    assert e.value.line == line
    assert msg in str(e.value)
    assert f"Dockerfile.test:{line}" in str(e.value) and f"line {line}" in str(e.value)


def test_shell_form_brackets_are_not_json() -> None:
    df = parse_text("FROM busybox\nRUN [ -f /etc/passwd ] && echo ok\n")
    run = df.stages[0].instructions[0]
    assert isinstance(run, I.Run) and run.exec_form is None and run.shell_form.startswith("[ -f")


def test_instructions_and_stages() -> None:
    df = parse_text("ARG V=1\nfrom busybox:${V} as Base\nenv A=1 B=\"x y\"\nENV LEGACY some value\n"
                    "label a=b \"c d\"=e\nexpose 80 443/udp\nvolume /a /b\nvolume [\"/c\"]\nuser 1:2\n"
                    "workdir /w\nstopsignal SIGTERM\nhealthcheck --interval=5s --retries=3 CMD [\"true\"]\n"
                    "healthcheck NONE\nshell [\"/bin/bash\", \"-c\"]\nonbuild run echo x\nmaintainer me\n"
                    "entrypoint [\"sh\"]\ncmd echo hi\ncopy --from=base --chown=1:1 --chmod=755 --link "
                    "--exclude=*.md --exclude=x a b /d/\nadd --checksum=sha256:00 http://x/y /z\n"
                    "run --mount=type=cache,target=/c --network=none --security=insecure make\n"
                    "FROM base\n")
    assert [a.args for a in df.meta_args] == [[("V", "1")]]
    s0, s1 = df.stages
    assert s0.name == "base" and s0.base.image == "busybox:${V}" and s1.base.image == "base"
    assert df.stage_index("BASE") == 0 and df.stage_index("1") == 1 and df.stage_index("nope") is None
    ins = s0.instructions
    kinds = [type(i).__name__ for i in ins]
    assert kinds == ["Env", "Env", "Label", "Expose", "Volume", "Volume", "User", "Workdir", "StopSignal",
                     "Healthcheck", "Healthcheck", "Shell", "Onbuild", "Maintainer", "Entrypoint", "Cmd", "Copy",
                     "Copy", "Run"]
    assert ins[0].pairs == [("A", "1"), ("B", '"x y"')]
    assert ins[1].pairs == [("LEGACY", "some value")]
    assert ins[2].pairs == [("a", "b"), ('"c d"', "e")]
    assert ins[5].words == ["/c"]
    hc = ins[9]
    assert isinstance(hc, I.Healthcheck) and hc.command is not None and hc.command.exec_form == ["true"]
    assert hc.flag("interval") == "5s" and hc.flag("retries") == "3"
    assert ins[10].kind == "NONE"
    ob = ins[12]
    assert isinstance(ob, I.Onbuild) and ob.expression == "run echo x" and isinstance(ob.trigger, I.Run)
    cp = ins[16]
    assert isinstance(cp, I.Copy) and cp.sources == ["a", "b"] and cp.dest == "/d/"
    assert cp.flags["exclude"] == ["*.md", "x"] and cp.bool_flag("link") and cp.flag("from") == "base"
    add = ins[17]
    assert isinstance(add, I.Copy) and add.is_add and add.flag("checksum") == "sha256:00"
    run = ins[18]
    assert run.flags["mount"] == ["type=cache,target=/c"] and run.flag("network") == "none"


def test_durations() -> None:
    assert parse_duration("1m30s") == 90_000_000_000
    assert parse_duration("1.5s") == 1_500_000_000
    assert parse_duration("250ms") == 250_000_000
    with pytest.raises(ValueError):
        parse_duration("10")


def test_word_expansion() -> None:
    lx = Lexer()
    env = {"A": "1", "E": "", "P": "foo/bar.tar.gz", "S": "a b"}
    cases = {
        "$A": "1", "${A}": "1", "x${A}y": "x1y", "${B:-d}": "d", "${E:-d}": "d", "${E-d}": "", "${A:+y}": "y",
        "${E:+y}": "", "${E+y}": "y", "${B+y}": "", '"a $A"': "a 1", "'$A'": "$A", "\\$A": "$A", "$": "$",
        "${P%.*}": "foo/bar.tar", "${P%%.*}": "foo/bar", "${P#*/}": "bar.tar.gz", "${P##*.}": "gz",
        "${P/o/0}": "f0o/bar.tar.gz", "${P//o/0}": "f00/bar.tar.gz", '"\\"q\\""': '"q"', "$A$A": "11",
        "${B:-$A}": "1", "a\\ b": "a b",
    }
    for word, want in cases.items():
        assert lx.process_word(word, env) == want, word
    assert lx.process_words('x "$S" $S', env) == ["x", "a b", "a", "b"]
    assert Lexer("`").process_word("a`$A", env) == "a$A"
    for bad in ("${A", "${:}", "'open", '"open', "${E:?must be set}x", "${B?unset}"):
        with pytest.raises(ExpansionError):
            lx.process_word(bad, env)
