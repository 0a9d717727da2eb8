"""Every ``anysat-lite`` command written in the README and docs/ is one the current code accepts.

A number in the docs is reproducible only while the command written next to it still runs: a renamed option, a
config key moved to another section or a preset renamed would leave the number without its command. These tests
read each command (the shell code blocks, with their loops and variables, and the commands in inline code) and
hand it to the command's own parser and to the checks it makes before any work: the config with its ``--set``
overrides, the probes' settings, the paper's task names, the benchmark's options. Nothing is trained or read.
Synopses (``[--force]``, ``PRESET``, ``...``) are skipped.
"""

import contextlib
import io
import json
import re
import shlex

import pytest
from conftest import ROOT

from anysat_lite import bench, cli
from anysat_lite.config import get_config, validate_probe
from anysat_lite.errors import UserError
from anysat_lite.notebooks import check_run_options
from anysat_lite.probe.tasks import get_task

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.ipynb"))]
SYNOPSIS = re.compile(r"\[-|\[[A-Z]|\.\.\.|\b(PRESET|NAME|ROOT|CKPT|DIR|FILE|KEY|VALUE|N|W|OWNER|REPO)\b")
ENTRY = re.compile(r"(?:^|\s)(?:anysat-lite|(?:python|torchrun\b.*?)\s+-m\s+anysat_lite)\s+(.*)$")


def _text(doc) -> str:
    """A page's Markdown, or a notebook's markdown cells joined."""
    text = doc.read_text(encoding="utf-8")
    if doc.suffix != ".ipynb":
        return text
    return "\n\n".join("".join(c["source"]) for c in json.loads(text)["cells"] if c["cell_type"] == "markdown")


def _shell_lines(block: str) -> list[str]:
    """The commands of a shell block, one per line: continuations joined, simple ``name='value'`` assignments
    and ``for name in first ...; do`` loop variables substituted (the first value), comments dropped."""
    variables: dict[str, str] = {}
    lines = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s#.*$|^\s*#.*$", "", line).rstrip()
        for name, value in re.findall(r"for (\w+) in (\S+)", line):
            variables[name] = value
        assignment = re.fullmatch(r"\s*(\w+)=(?:'([^']*)'|\"([^\"]*)\"|(\S*))\s*", line)
        if assignment:
            name, *values = assignment.groups()
            variables[name] = next(v for v in values if v is not None)
            continue
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), line)
        lines.append(" ".join(line.split()))
    return lines


def documented_commands() -> list[tuple[str, str]]:
    """``(where, argv text after anysat-lite)`` for every command in the README, docs/ and the notebooks' text."""
    found = []
    for doc in DOCUMENTS:
        text = _text(doc)
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
        lines = [line for lang, body in blocks if lang in ("bash", "sh", "") for line in _shell_lines(body)]
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        lines += re.findall(r"`([^`\n]*anysat-lite [^`\n]*)`", prose)
        for line in lines:
            for part in re.split(r"&&?|;|\|", line):
                m = ENTRY.search(part.strip())
                if m and not SYNOPSIS.search(m.group(1)):
                    found.append((doc.name, m.group(1).strip()))
    return sorted(set(found))


SUBCOMMANDS = ("demo", "pretrain", "probe", "embed", "bench", "notebooks", "info")


def documented_options() -> list[tuple[str, str, str]]:
    """``(where, command, --option)`` for the options named in synopses (``anysat-lite demo [--resume] ...``)
    and in prose that names a command without the program (``probe --official --attend-over heads``)."""
    found = []
    for doc in DOCUMENTS:
        text = _text(doc)
        for span in re.findall(r"`([^`\n]+)`", text):
            m = re.match(rf"(?:anysat-lite |python -m anysat_lite )?({'|'.join(SUBCOMMANDS)})( .*)?$", span.strip())
            if m and (span.startswith(("anysat-lite", "python")) or "--" in (m.group(2) or "")):
                found += [(doc.name, m.group(1), o) for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2) or "")]
    return sorted(set(found))


OPTIONS = documented_options()


COMMANDS = documented_commands()


def check_command(argv: list[str]) -> None:
    """Run a command's own checks of its arguments, without running it (raises on a mistake)."""
    if all(a.startswith("--") for a in argv[1:]):  # named in prose, "`anysat-lite probe --official` runs..."
        shown = io.StringIO()
        with pytest.raises(SystemExit) as done, contextlib.redirect_stdout(shown):
            (bench.build_parser() if argv[0] == "bench" else cli.build_parser()).parse_args([*argv[:1], "--help"])
        assert done.value.code == 0, f"anysat-lite {argv[0]}: no such command"
        missing = [a for a in argv[1:] if not re.search(rf"{a}\b", shown.getvalue())]
        assert not missing, f"anysat-lite {argv[0]} has no option {missing[0]}"
        return
    if argv[0] == "bench":
        args = bench.build_parser().parse_args(argv[1:])
        if args.official == "PATH":  # the official implementation's folder, wherever the reader keeps it
            args.official = None
        bench._check_args(args)
        return
    args = cli.build_parser().parse_args(argv)
    if args.command == "notebooks":
        check_run_options(not args.full, args.store)
        return
    if args.command == "probe" and (args.official or args.task or args.data):
        for task in args.task:
            get_task(task)
        assert args.official and args.data, "--official needs --task and --data"
        return
    if args.command in ("demo", "pretrain", "probe"):
        cfg = cli._config(args)
        if args.command != "pretrain":
            validate_probe(cfg)


def test_the_docs_hold_commands_of_every_kind():
    kinds = {argv.split()[0] for _, argv in COMMANDS}
    assert {"demo", "pretrain", "probe", "bench"} <= kinds
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_documented_command_is_accepted(where, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run folders named in the commands do not exist here
    try:
        check_command(shlex.split(command))
    except SystemExit as e:  # argparse's refusal
        pytest.fail(f"{where}: `anysat-lite {command}` is refused by the parser (exit {e.code})")


def test_a_stale_command_is_caught():
    """The checks fail on the mistakes they exist for: a renamed option, a moved key, an unknown preset/task."""
    for stale in (
        ["demo", "--seedz", "0", "1"],
        ["probe", "--offcial"],
        ["pretrain", "--set", "train.ema=[0.99,1.0]"],
        ["pretrain", "--config", "geoplexx"],
        ["probe", "--official", "AnySat.pth", "--task", "treesat-lp", "--data", "/data"],
        ["bench", "--pretrain", "base-gpu"],
    ):
        with pytest.raises((SystemExit, UserError, AssertionError)):
            check_command(stale)


def test_shell_lines_substitute_loops_and_assignments():
    block = (
        "ov='--set a=1'\nfor s in 0 1; do\n  anysat-lite pretrain $ov --set train.seed=$s \\\n  --out x  # c\ndone\n"
    )
    assert _shell_lines(block) == [
        "for s in 0 1; do",
        "anysat-lite pretrain --set a=1 --set train.seed=0 --out x",
        "done",
    ]


def documented_overrides() -> list[tuple[str, str]]:
    """``(where, key=value)`` for every override written alone in inline code (`jepa.ema=[0.99,1.0]`)."""
    found = []
    for doc in DOCUMENTS:
        text = _text(doc)
        for span in re.findall(r"`((?:model|data|jepa|train|probe)\.\w+=[^`]*)`", text):
            if not re.fullmatch(r"[\w.]+=[A-Z]", span):  # data.seed=W: a placeholder
                found.append((doc.name, span))
    return sorted(set(found))


OVERRIDES = documented_overrides()


@pytest.mark.parametrize("where, override", OVERRIDES, ids=[f"{w}: {o}" for w, o in OVERRIDES])
def test_documented_override_is_accepted(where, override):
    """An override the docs give is a key and value the config takes, in the demo's preset or, for a setting
    of the official recipe (`train.recipe=anysat`), in `geoplex`'s."""
    try:
        get_config("cpu-demo", [override])
    except UserError:
        get_config("geoplex", [override])


def _help(command: str) -> str:
    """The ``--help`` text of ``anysat-lite COMMAND`` (the benchmark has its own parser)."""
    parser, argv = (
        (bench.build_parser(), ["--help"]) if command == "bench" else (cli.build_parser(), [command, "--help"])
    )
    shown = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(shown):
        parser.parse_args(argv)
    return shown.getvalue()


@pytest.mark.parametrize("where, command, option", OPTIONS, ids=[f"{w}: {c} {o}" for w, c, o in OPTIONS])
def test_documented_option_exists(where, command, option):
    assert re.search(rf"{option}\b", _help(command)), f"{where}: anysat-lite {command} has no option {option}"


def test_the_options_of_synopses_and_prose_are_read():
    assert ("README.md", "probe", "--attend-over") in OPTIONS and ("README.md", "demo", "--seeds") in OPTIONS
    assert ("README.md", "notebooks", "--store") in OPTIONS
