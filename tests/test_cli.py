"""tonsai.cli: command lines built from a stage's config dataclass, ``--config FILE`` (YAML or JSON)
with flags overriding it, strict reading of the file, every stage YAML shipped under configs/
parsed into its stage's config, and every script's --help."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tonsai.cli import build_parser, parse_config
from tonsai.data.prepare import PrepareConfig
from tonsai.safety.run import SafetyConfig
from tonsai.tokenizer.pack import TokenizeConfig
from tonsai.train.config import TrainConfig

from .conftest import REPO


@dataclasses.dataclass
class Stage:
    """A stage's options as tonsai declares them (the parser is what is tested here)."""

    output_dir: str = dataclasses.field(metadata={"help": "where to write"})
    steps: int = dataclasses.field(default=10, metadata={"help": "how many steps"})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "a rate"})
    fast: bool = dataclasses.field(default=False, metadata={"help": "go fast"})
    inputs: list[str] = dataclasses.field(default_factory=list, metadata={"help": "input files"})
    mode: str = dataclasses.field(default="a", metadata={"help": "a mode", "choices": ["a", "b"]})

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError("--steps must be at least 1")


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_flags_alone(capsys):
    cfg = parse_config(Stage, "", ["--output-dir", "o", "--steps", "3", "--fast", "--inputs", "x", "y"])
    assert cfg == Stage("o", steps=3, fast=True, inputs=["x", "y"])


def test_yaml_file_gives_values_and_flags_typed_after_override_them(tmp_path):
    f = write(tmp_path / "s.yaml", "output-dir: from_file\nsteps: 7\nrate: 0.25\nfast: true\ninputs: [a, b]\n")
    assert parse_config(Stage, "", ["--config", f]) == Stage("from_file", 7, 0.25, True, ["a", "b"])
    cfg = parse_config(Stage, "", ["--config", f, "--steps", "9", "--no-fast", "--output-dir", "flag"])
    assert (cfg.output_dir, cfg.steps, cfg.fast, cfg.rate, cfg.inputs) == ("flag", 9, False, 0.25, ["a", "b"])


def test_json_file_is_read_too(tmp_path):
    f = write(tmp_path / "s.json", json.dumps({"output_dir": "o", "mode": "b"}))
    assert parse_config(Stage, "", ["--config", f]).mode == "b"


@pytest.mark.parametrize("text, message", [
    ("output_dir: o\nstesp: 3\n", r"unknown option 'stesp' \(did you mean steps\?\)"),
    ("output_dir: o\nsteps: many\n", r"steps: expected an integer, got the string 'many'"),
    ("output_dir: o\nmode: c\n", r"mode: 'c' is not one of \['a', 'b'\]"),
    ("- just\n- a list\n", r"expected a mapping of option names to values"),
    ("output_dir: [unclosed\n", r"cannot parse"),
])
def test_a_bad_file_is_a_usage_error_that_names_the_field(tmp_path, capsys, text, message):
    f = write(tmp_path / "s.yaml", text)
    with pytest.raises(SystemExit) as e:
        parse_config(Stage, "", ["--config", f])
    assert e.value.code not in (0, None)
    out = capsys.readouterr().err + str(e.value.code)
    assert f"--config {f}" in out
    assert re.search(message, out), out


def test_a_missing_file_and_a_missing_required_option_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Stage, "", ["--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml: no such file" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        parse_config(Stage, "", ["--steps", "2"])
    assert e.value.code == 2 and "--output-dir" in capsys.readouterr().err


def test_a_value_the_stage_refuses_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Stage, "", ["--output-dir", "o", "--steps", "0"])
    assert e.value.code == 2 and "--steps must be at least 1" in capsys.readouterr().err


def test_help_lists_each_option_with_its_default():
    text = build_parser(Stage, "a stage").format_help()
    assert "--config CONFIG" in text and "how many steps (default: 10)" in text and "{a,b}" in text


# every stage YAML shipped under configs/, with the stage config it is for and the flags it leaves to
# the command line (the folders)
SHIPPED = {
    "prepare": (PrepareConfig, ["--output-dir", "runs/data"]),
    "tokenize": (TokenizeConfig, ["--dataset-dir", "d", "--tokenizer-dir", "t", "--output-dir", "o"]),
    "train": (TrainConfig, ["--dataset-dir", "d", "--tokenizer-dir", "t", "--output-dir", "o"]),
    "safety": (SafetyConfig, ["--model-dir", "m", "--output-dir", "o"]),
}
STAGE_YAMLS = sorted(p for stage in SHIPPED for p in (REPO / "configs" / stage).glob("*.yaml"))


def test_every_stage_folder_under_configs_is_known():
    """configs/data holds mix files (--mix), configs/model and configs/deepspeed JSON for --model-config
    and --deepspeed; every other folder holds stage YAMLs that the next test parses."""
    folders = {p.name for p in (REPO / "configs").iterdir() if p.is_dir()}
    assert folders - {"data", "model", "deepspeed"} == set(SHIPPED)
    assert len(STAGE_YAMLS) >= 5


@pytest.mark.parametrize("path", STAGE_YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_stage_yaml_parses_into_its_config(path, monkeypatch):
    monkeypatch.chdir(REPO)  # the files name other shipped files relative to the repository
    cls, flags = SHIPPED[path.parent.name]
    cfg = parse_config(cls, "", ["--config", str(path.relative_to(REPO)), *flags])
    assert isinstance(cfg, cls)
    if getattr(cfg, "executor", "local") == "slurm":  # the extra #SBATCH lines read as the flag gives them
        assert cfg.slurm_partition and cfg.parsed_sbatch_args()["account"] == "khmer-nlp"


def test_the_slurm_prepare_yaml_gives_what_the_documented_command_line_gives(monkeypatch):
    monkeypatch.chdir(REPO)
    from_file = parse_config(PrepareConfig, "", ["--config", "configs/prepare/fineweb2_km_en_slurm.yaml",
                                                 "--output-dir", "/shared/runs/data"])
    from_flags = parse_config(PrepareConfig, "", [
        "--mix", "configs/data/fineweb2_km_en_local.yaml", "--khmer-weight", "0.5", "--english-weight", "0.5",
        "--max-epochs", "4", "--executor", "slurm", "--slurm-partition", "cpu", "--slurm-time", "6:00:00",
        "--slurm-sbatch", "account=khmer-nlp", "constraint=cpu", "--num-shards", "512", "--workers", "128",
        "--output-dir", "/shared/runs/data"])
    assert from_file == from_flags


@pytest.mark.parametrize("script", sorted(p.stem for p in (REPO / "scripts").glob("*.py")))
def test_every_script_has_help(script):
    """Every script under scripts/ answers --help with an example, --config and the defaults."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / f"{script}.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "Example" in proc.stdout and "--config CONFIG" in proc.stdout and "(default:" in proc.stdout


def test_ctrl_c_is_one_line_that_says_how_to_continue_and_exit_130(capsys):
    from tonsai.cli import run_main

    def interrupted():
        raise KeyboardInterrupt

    assert run_main(interrupted) == 130
    err = capsys.readouterr().err
    assert err.lstrip("\n").startswith("interrupted (Ctrl-C).") and "--resume-from auto" in err and "Traceback" not in err
    assert "If the stage had just finished, its output is complete" in err  # a rerun may find it complete


def test_every_scripts_examples_keep_their_line_breaks_in_help():
    """A backslash at a line's end inside a plain docstring joins the lines (``--help`` showed
    ``en.jsonl.zst       --khmer-weight``): the scripts' docstrings are raw strings."""
    import ast

    for script in sorted((REPO / "scripts").glob("*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        assert not re.search(r"\S {4,}--", doc), script.name
