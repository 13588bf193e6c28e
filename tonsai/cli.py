"""Command lines built from the typed config dataclass of each stage.

Each stage declares one dataclass whose fields carry their ``--help`` text in
``field(metadata={"help": ...})``. :func:`parse_config` builds the argparse parser from it,
optionally reads ``--config FILE`` (YAML or JSON) and lets explicit flags override the file.
The file is read strictly (:mod:`tonsai.configfile`): an unknown option names the closest one, and
a value of the wrong type names its field.
The dataclass validates itself in ``__post_init__``; a ``ValueError`` from there becomes a clean
usage error and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml

from tonsai.configfile import check_fields
from tonsai.errors import StageError
from tonsai.manifest import ManifestError

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def build_parser(cls: type, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", type=Path, help="YAML or JSON file with values for these options; flags override it")
    hints = typing.get_type_hints(cls)
    own = set(vars(cls).get("__annotations__", {}))  # the stage's own options first, inherited ones (executors) after
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if default not in (None, [], ()) and not required:
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"help": help_text, "dest": f.name}
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            (item,) = typing.get_args(tp)[:1]
            kwargs["nargs"] = "+"
            kwargs["type"] = item
        else:
            kwargs["type"] = tp
        names = [_flag(f.name), *f.metadata.get("aliases", ())]
        parser.add_argument(*names, **kwargs)
    return parser


def _load_config_file(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"error: --config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise SystemExit(f"error: --config {path}: cannot parse ({e})") from e
    if not isinstance(data, dict):
        raise SystemExit(f"error: --config {path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_config(cls: type[T], description: str, argv: Sequence[str] | None = None,
                 epilog: str | None = None) -> T:
    """Parse ``argv`` into an instance of the dataclass ``cls`` (exit 2 with a message on error)."""
    parser = build_parser(cls, description, epilog)
    ns = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = ns.pop("config", None)
    if config_file is not None:
        try:  # unknown options name the closest one; values of the wrong type name their field
            values.update(check_fields(_load_config_file(config_file), cls))
        except ValueError as e:
            parser.error(f"--config {config_file}: {e}")
    values.update(ns)
    missing = [
        _flag(f.name) for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
        raise  # unreachable; parser.error exits


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_main(fn: Callable[[], Any]) -> int:
    """Run a stage's main function; a :class:`StageError` becomes one clear line and exit 1."""
    setup_logging()
    try:
        fn()
    except (StageError, ManifestError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C). Outputs appear only when complete, so nothing half-written is in place: run "
              "the same command again to continue (finished prepare and tokenize tasks are kept; a training run "
              "continues from its newest complete checkpoint with --resume-from auto). If the stage had just finished, "
              "its output is complete and the rerun says so.", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: the disk is full ({e}). Nothing was replaced: every stage writes under a temporary "
              f"name and renames it into place when complete. Free space and run the same command again.",
              file=sys.stderr)
        return 1
    return 0
