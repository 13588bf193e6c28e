"""The commands that README.md, docs/*.md and the scripts' --help examples show: every ``uv run python
scripts/NAME.py ...`` line in a fenced block of the docs or in a script's docstring (backslash
continuations joined, comments dropped) names a script that exists and parses, exactly as written,
into its stage's config (a shell variable such as ``$TASK`` stands for 3); commands abbreviated with
``...`` are only checked for their script.
Nothing is run: the script stops right after parsing."""

import ast

import re
import runpy
import shlex
import sys

import pytest

import tonsai.cli

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))
COMMAND = re.compile(r"uv run python (scripts/\w+\.py)(.*)")


def _joined(lines: list[str], first: int) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    for i, line in enumerate(lines, first):
        if out and out[-1][1].endswith("\\"):
            out[-1] = (out[-1][0], out[-1][1][:-1] + " " + line.strip())
        else:
            out.append((i, line))
    return out


def _fenced(text: str) -> list[tuple[int, str]]:
    """(line number, line) inside the fenced blocks of a Markdown text."""
    out, fenced = [], False
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            out.append((i, line))
    return out


def shown_commands() -> list[tuple[str, str, str]]:
    """(where, script, argument string) of every command the docs and the scripts' docstrings show."""
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    for doc in DOCS:
        fenced = _fenced(doc.read_text(encoding="utf-8"))
        runs: list[list[tuple[int, str]]] = []
        for i, line in fenced:  # consecutive fenced lines form one block
            if runs and runs[-1][-1][0] == i - 1:
                runs[-1].append((i, line))
            else:
                runs.append([(i, line)])
        blocks += [(str(doc.relative_to(REPO)), _joined([x for _, x in run], run[0][0])) for run in runs]
    for script in SCRIPTS:
        tree = ast.parse(script.read_text(encoding="utf-8"))
        blocks.append((str(script.relative_to(REPO)), _joined(ast.get_docstring(tree, clean=False).splitlines(), 2)))
    out = []
    for where, lines in blocks:
        for i, text in lines:
            m = COMMAND.search(text)
            if m:
                out.append((f"{where}:{i}", m.group(1), m.group(2)))
    return out


COMMANDS = shown_commands()


class _Parsed(Exception):
    pass


def test_the_docs_show_commands_of_every_stage():
    scripts = {script for _, script, _ in COMMANDS}
    assert {"scripts/prepare_dataset.py", "scripts/train_tokenizer.py", "scripts/train_gpt2.py",
            "scripts/eval_model.py", "scripts/train_sft.py", "scripts/safety_check.py"} <= scripts
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("where,script,args", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_a_documented_command_parses_as_written(where, script, args, monkeypatch, capsys):
    assert (REPO / script).is_file(), f"{where}: {script} does not exist"
    argv = [re.sub(r"^\$\w+$", "3", a) for a in shlex.split(args, comments=True)]
    if any("..." in a for a in argv):
        return  # an abbreviation: the script exists, the rest is the reader's
    real = tonsai.cli.parse_config
    parsed = {}

    def parse_then_stop(cls, description, argv_=None, epilog=None):
        parsed["config"] = real(cls, description, argv if argv_ is None else argv_, epilog)  # the script's own argv
        raise _Parsed

    monkeypatch.setattr(tonsai.cli, "parse_config", parse_then_stop)
    monkeypatch.chdir(REPO)  # the docs' relative paths (configs/...) are the repository's
    monkeypatch.setattr(sys, "argv", [script, *argv])
    try:
        runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as e:
        pytest.fail(f"{where}: `{script}{args}` does not parse (exit {e.code}): {capsys.readouterr().err[-600:]}")
    except _Parsed:
        pass
    assert parsed, f"{where}: {script} did not parse a config"


def _run_folder(model_dir: str) -> str:
    """The stage output a model folder belongs to: R for R/final or R/checkpoint-N, else the folder."""
    parts = model_dir.rstrip("/").split("/")
    return "/".join(parts[:-1]) if re.fullmatch(r"final|checkpoint-\d+", parts[-1]) else "/".join(parts)


@pytest.mark.parametrize("where,script,args", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_a_documented_command_writes_beside_the_model_not_into_its_run(where, script, args):
    """Stages refuse an --output-dir inside another stage's output (a train or SFT run folder): a
    command the docs show must not be one they refuse."""
    argv = shlex.split(args, comments=True)
    opts = {a: b for a, b in zip(argv, argv[1:]) if a in ("--model-dir", "--output-dir")}
    if len(opts) < 2 or any("..." in v for v in opts.values()):
        return
    run = _run_folder(opts["--model-dir"])
    out = opts["--output-dir"].rstrip("/")
    assert out != run and not out.startswith(run + "/"), (
        f"{where}: --output-dir {out} lies inside {run}, the run of --model-dir {opts['--model-dir']}: "
        f"the stage refuses it; write beside it (runs/eval/NAME, runs/safety/NAME)")
