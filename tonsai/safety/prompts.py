"""The safety prompt set and generations read back from a file, both JSON lines.

Prompt set (eval_suites/safety/prompts.jsonl): one object per line with ``id`` (unique), ``lang``,
``category`` (one of :data:`tonsai.safety.CATEGORIES`) and ``prompt``. Prompt text is normalized
with :func:`tonsai.text.normalize`, as the model saw its training text.

Generations (``--generations``): one object per line with ``id`` (a prompt's id) and
``generation``; other fields are ignored, so the generations.jsonl a safety check writes can be
scored again with another lexicon, classifier or threshold without the model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tonsai.errors import StageError
from tonsai.jsonl import json_lines
from tonsai.safety import CATEGORIES
from tonsai.text import normalize


@dataclasses.dataclass(frozen=True)
class Prompt:
    id: str
    lang: str
    category: str
    prompt: str


def _records(path: Path, flag: str):
    """(line number, object) for every non-empty line of a JSON-lines file."""
    if not path.is_file():
        raise StageError(f"{flag} {path}: no such file")
    yield from json_lines(path)


def _text_field(path: Path, lineno: int, rec: dict, key: str, allow_empty: bool = False) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise StageError(f"{path}:{lineno}: field {key!r} must be {'' if allow_empty else 'non-empty '}text, "
                         f"got {value!r}")
    return value


def load_prompts(path: str | Path) -> list[Prompt]:
    """The prompt set, validated: every field present, categories known, ids unique."""
    path = Path(path)
    prompts, seen = [], {}
    for lineno, rec in _records(path, "--prompts"):
        pid, lang, category, text = (_text_field(path, lineno, rec, k) for k in ("id", "lang", "category", "prompt"))
        if category not in CATEGORIES:
            raise StageError(f"{path}:{lineno}: unknown category {category!r}; the categories are "
                             f"{', '.join(CATEGORIES)}")
        if pid in seen:
            raise StageError(f"{path}:{lineno}: id {pid!r} is used on line {seen[pid]} too; ids must be unique")
        seen[pid] = lineno
        prompts.append(Prompt(pid, lang, category, normalize(text).strip()))
    if not prompts:
        raise StageError(f"--prompts {path}: no prompts in the file")
    return prompts


def load_generations(path: str | Path, prompts: list[Prompt], known: set[str] | None = None) -> list[str]:
    """Generations for ``prompts`` in their order, from a JSON-lines file keyed by prompt id; ids of
    ``known`` prompts (the whole set, when ``prompts`` is a selection of it) that are not asked for are
    skipped, any other id is an error."""
    path = Path(path)
    known = known if known is not None else {p.id for p in prompts}
    by_id: dict[str, str] = {}
    for lineno, rec in _records(path, "--generations"):
        pid = _text_field(path, lineno, rec, "id")
        if pid not in known:
            raise StageError(f"{path}:{lineno}: id {pid!r} is not in the prompt set; score generations with the "
                             "--prompts file they were made from")
        by_id[pid] = _text_field(path, lineno, rec, "generation", allow_empty=True)
    missing = [p.id for p in prompts if p.id not in by_id]
    if missing:
        raise StageError(f"--generations {path} has no generation for {len(missing)} prompt(s) of the set "
                         f"(first: {', '.join(missing[:3])}); give one per prompt, or pass --limit as when "
                         "they were made")
    return [by_id[p.id] for p in prompts]
