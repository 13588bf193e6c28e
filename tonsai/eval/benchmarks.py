"""Items of public benchmarks, from local files or the Hugging Face Hub, for prompt-suite tasks.

A loader returns a list of items (dicts) whose fields a task's templates name. Paths are resolved
against the suite file's folder. Every loader takes ``path`` (local) or ``hub`` (a dataset id, read
with ``datasets.load_dataset``; offline this only works from the local datasets cache).

``parallel`` (aliases ``flores``, ``ntrex``): aligned sentence files.
    Local layouts: ``<path>/<lang>.txt`` (the shared FLORES/SIB and NTREX-128 folders), or the FLORES-200
    release ``<path>/<split>/<lang>.<split>``. Hub: a FLORES+-style dataset (``openlanguagedata/flores_plus``)
    with one config per language and a ``text`` field. Options ``source`` (default ``khm_Khmr``),
    ``target`` (``eng_Latn``), ``split`` (``dev``). Items: ``id`` (1-based line), ``source``, ``target``
    and one field per language code (``{khm_Khmr}``, ``{eng_Latn}``).
``sib200``: SIB-200 topic classification as multiple choice.
    Local layouts: ``<path>/items.jsonl`` (the shared ``sib200_flores_khm_eng_dev`` folder: fields
    ``category``, ``sib_split``, ``<lang>``) or the SIB-200 repository ``<path>/[data/annotated/]<lang>/<split>.tsv``
    (``index_id``, ``category``, ``text``). Hub: ``Davlan/sib200``, config ``<lang>``. Options ``lang``
    (``khm_Khmr``), ``split`` (None: every item; else ``train``/``dev``/``test``), ``labels`` (the label
    list; default ``<path>/labels.txt`` or the 7 SIB-200 topics), ``label_names`` (a mapping from label to
    the word shown as the choice, e.g. Khmer names). Items: ``id``, ``text``, ``category``, ``choices``
    (label names, in ``labels`` order), ``answer`` (index of the item's label).
``belebele``: Belebele reading comprehension (4 choices).
    Local: a JSONL file in Belebele's format (``flores_passage``, ``question``, ``mc_answer1``..``4``,
    ``correct_answer_num`` 1-based, ``dialect``) or a folder holding ``<lang>.jsonl``. Hub:
    ``facebook/belebele``, config ``<lang>``, split ``test``. Option ``lang`` (``khm_Khmr``; rows of
    another ``dialect`` are skipped). Items: ``passage``, ``question``, ``choices``, ``answer`` (0-based),
    ``id``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Callable

from tonsai.errors import StageError
from tonsai.jsonl import json_lines
from tonsai.text.aligned import read_aligned

# datasets (0.7 s to import on a 2-core machine) is imported inside _hub only, for hub: loaders: suites
# read from local files, and eval_model.py (and its --help) load this module through tonsai.eval.suites.

SIB200_LABELS = ["science/technology", "travel", "politics", "sports", "health", "entertainment", "geography"]


def read_jsonl(path: Path) -> list[dict]:
    """Objects of a JSONL file; a bad line raises StageError naming ``file:line``. Blank lines are skipped."""
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    items = []
    for n, obj in json_lines(path, "; each line must be one JSON object"):
        obj["_line"] = n
        obj["_file"] = str(path)
        items.append(obj)
    return items


def _hub(dataset: str, config: str | None, split: str) -> list[dict]:
    try:
        import datasets

        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # offline, gated, no such config: all are the user's to fix
        raise StageError(f"could not load {dataset!r} (config {config!r}, split {split!r}) from the Hub: "
                         f"{type(e).__name__}: {e}. Download it (or pass a local path) and try again") from None
    return [dict(row) for row in ds]


def _resolve(base: Path, path: str | None) -> Path | None:
    """A ``path:`` option: ``${VAR}`` from the environment, ``~`` expanded, relative to the suite's folder.

    A relative value of a variable is relative to the current directory, as in the shell that set it
    (``TONSAI_BENCHMARK_DATA=../shared/data`` means ../shared/data from where you run eval_model.py);
    only a path written relative in the suite file itself is relative to the suite's folder."""
    if path is None:
        return None

    def var(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if not value:
            raise StageError(f"path {path!r} uses ${{{m.group(1)}}}, which is not set: export {m.group(1)}=<folder "
                             "with the benchmark files> or edit the suite's `path:`")
        return os.path.abspath(os.path.expanduser(value))

    p = Path(re.sub(r"\$\{(\w+)\}", var, path)).expanduser()
    return p if p.is_absolute() else base / p


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    return path.read_text(encoding="utf-8").splitlines()


def load_parallel(base: Path, path: str | None = None, hub: str | None = None, source: str = "khm_Khmr",
                  target: str = "eng_Latn", split: str = "dev") -> list[dict]:
    """Aligned sentence pairs (see the module docstring)."""
    texts: dict[str, list[str]] = {}
    where = hub or str(_resolve(base, path))
    if hub:
        for lang in (source, target):
            texts[lang] = [row["text"] for row in _hub(hub, lang, split)]
    else:
        folder = _resolve(base, path)
        if folder is None:
            raise StageError("the parallel/flores loader needs `path:` (a folder) or `hub:` (a dataset id)")
        files = []
        for lang in (source, target):
            flat, release = folder / f"{lang}.txt", folder / split / f"{lang}.{split}"
            if not flat.is_file() and not release.is_file():
                raise StageError(f"{folder}: neither {flat.name} nor {split}/{release.name} found for language "
                                 f"{lang}; check `path:` and the language codes (e.g. khm_Khmr, eng_Latn)")
            files.append(flat if flat.is_file() else release)
        texts[source], texts[target] = read_aligned(*files, where, names=(source, target))
    if len(texts[source]) != len(texts[target]):
        raise StageError(f"{where}: {source} has {len(texts[source])} lines but {target} has "
                         f"{len(texts[target])}; the files must be line-aligned")
    return [{"id": i + 1, "source": s, "target": t, source: s, target: t}
            for i, (s, t) in enumerate(zip(texts[source], texts[target]))]


def _sib_labels(folder: Path | None, labels: list[str] | None) -> list[str]:
    if labels:
        return list(labels)
    if folder is not None and (folder / "labels.txt").is_file():
        return [x.strip() for x in _lines(folder / "labels.txt") if x.strip()]
    return list(SIB200_LABELS)


def load_sib200(base: Path, path: str | None = None, hub: str | None = None, lang: str = "khm_Khmr",
                split: str | None = None, labels: list[str] | None = None,
                label_names: dict[str, str] | None = None) -> list[dict]:
    """SIB-200 items as multiple choice (see the module docstring)."""
    rows: list[dict] = []  # {id, text, category}
    folder = _resolve(base, path)
    if hub:
        for s in ([split] if split else ["train", "validation", "test"]):
            rows += [{"id": r["index_id"], "text": r["text"], "category": r["category"]} for r in _hub(hub, lang, s)]
    elif folder is None:
        raise StageError("the sib200 loader needs `path:` (a folder) or `hub:` (a dataset id)")
    elif (folder / "items.jsonl").is_file():
        for obj in read_jsonl(folder / "items.jsonl"):
            if lang not in obj or "category" not in obj:
                raise StageError(f"{obj['_file']}:{obj['_line']}: no field {lang!r} or 'category'")
            if split is None or obj.get("sib_split") == split:
                rows.append({"id": obj.get("sib_index_id", obj["_line"]), "text": obj[lang],
                             "category": obj["category"]})
    else:
        tsv_dir = next((d for d in (folder / lang, folder / "data" / "annotated" / lang) if d.is_dir()), None)
        if tsv_dir is None:
            raise StageError(f"{folder}: no items.jsonl and no {lang}/ folder of SIB-200 TSV files")
        for s in ([split] if split else ["train", "dev", "test"]):
            tsv = tsv_dir / f"{s}.tsv"
            if not tsv.is_file():
                if split:
                    raise StageError(f"{tsv}: file not found (split {split!r})")
                continue
            with tsv.open(encoding="utf-8", newline="") as f:
                rows += [{"id": r["index_id"], "text": r["text"], "category": r["category"]}
                         for r in csv.DictReader(f, delimiter="\t")]
        if folder is not None and labels is None and (tsv_dir / "labels.txt").is_file():
            folder = tsv_dir
    names = _sib_labels(folder, labels)
    shown = [(label_names or {}).get(x, x) for x in names]
    items = []
    for r in rows:
        if r["category"] not in names:
            raise StageError(f"{where_of(folder, hub)}: item {r['id']} has category {r['category']!r}, "
                             f"not one of the labels {names}")
        items.append({**r, "choices": shown, "answer": names.index(r["category"]),
                      "label": shown[names.index(r["category"])]})
    return items


def where_of(folder: Path | None, hub: str | None) -> str:
    return hub or str(folder)


def load_belebele(base: Path, path: str | None = None, hub: str | None = None, lang: str = "khm_Khmr",
                  split: str = "test") -> list[dict]:
    """Belebele items (see the module docstring)."""
    if hub:
        rows = _hub(hub, lang, split)
        for i, r in enumerate(rows, 1):
            r["_line"], r["_file"] = i, hub
    else:
        p = _resolve(base, path)
        if p is None:
            raise StageError("the belebele loader needs `path:` (a JSONL file or folder) or `hub:` "
                             "(facebook/belebele)")
        rows = read_jsonl(p / f"{lang}.jsonl" if p.is_dir() else p)
    items = []
    for r in rows:
        if r.get("dialect", lang) != lang:
            continue
        missing = [k for k in ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3",
                               "mc_answer4", "correct_answer_num") if k not in r]
        if missing:
            raise StageError(f"{r['_file']}:{r['_line']}: missing Belebele field(s) {', '.join(missing)}")
        try:
            answer = int(r["correct_answer_num"]) - 1
        except (TypeError, ValueError):
            answer = -1
        if not 0 <= answer < 4:
            raise StageError(f"{r['_file']}:{r['_line']}: correct_answer_num must be 1..4, "
                             f"got {r['correct_answer_num']!r}")
        items.append({"id": r.get("question_number", r["_line"]), "passage": r["flores_passage"],
                      "question": r["question"], "choices": [r[f"mc_answer{k}"] for k in range(1, 5)],
                      "answer": answer, "_file": r["_file"], "_line": r["_line"]})
    if not items:
        raise StageError(f"{hub or p}: no Belebele items for dialect {lang!r}")
    return items


LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "parallel": load_parallel,
    "flores": load_parallel,
    "ntrex": load_parallel,
    "sib200": load_sib200,
    "belebele": load_belebele,
}
