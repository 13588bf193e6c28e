"""What the evaluation scores: texts per language and source, and aligned sentence pairs.

Three inputs, all normalized with :func:`tonsai.text.normalize` exactly as training text is:

- a prepared dataset's split (``--dataset-dir``), in the split's order, with its ``lang`` and
  ``source`` columns (one stream per language, each document labelled with its source);
- plain files given as ``LANG=FILE`` (``--text km=news.txt``): ``.txt`` holds one document per
  line, ``.jsonl`` one object per line with a ``text`` field; the source is named ``text:<file>``;
  invalid UTF-8 is decoded with U+FFFD, counted (``invalid_utf8_lines``) and warned about, as
  prepare_dataset.py does;
- aligned parallel text (``--parallel KM_FILE EN_FILE``): line *i* of one file translates line *i*
  of the other, as in FLORES-200 and NTREX-128.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from tonsai.data.prepared import load_prepared
from tonsai.data.sources import SKIP_HINT, ReadOptions, ReadStats, Source, binary_reason, iter_documents
from tonsai.errors import StageError
from tonsai.manifest import dataset_hash, file_sha256
from tonsai.text import normalize
from tonsai.text.aligned import check_text_file, read_aligned

log = logging.getLogger(__name__)
LANGS = ("km", "en")  # the languages tonsai routes, prepares and reports


@dataclasses.dataclass
class EvalSet:
    """Documents of one language from one source, in the order they are scored."""

    source: str
    lang: str
    texts: list[str]


@dataclasses.dataclass
class LanguageStream:
    """Every document of one language, in order, with the source of each: scored as one stream."""

    lang: str
    texts: list[str] = dataclasses.field(default_factory=list)
    sources: list[str] = dataclasses.field(default_factory=list)


def language_streams(sets: list[EvalSet]) -> list[LanguageStream]:
    """One stream per language: the sets' documents in the order given (a dataset split's order
    first, then --text files), as training's validation joins one language's split."""
    streams: dict[str, LanguageStream] = {}
    for s in sets:
        stream = streams.setdefault(s.lang, LanguageStream(s.lang))
        stream.texts.extend(s.texts)
        stream.sources.extend([s.source] * len(s.texts))
    return [streams[lang] for lang in sorted(streams)]


def parse_text_spec(spec: str) -> tuple[str, str]:
    """``"km=path/file.txt"`` -> ``("km", "path/file.txt")``, with an error that shows the form."""
    lang, sep, path = spec.partition("=")
    if not sep or not lang.strip() or not path.strip():
        raise StageError(f"--text {spec!r}: expected LANG=FILE, for example --text km=khmer.txt en=english.txt")
    if lang.strip() not in LANGS:
        raise StageError(f"--text {spec!r}: language {lang.strip()!r} is not one tonsai evaluates; "
                         f"use {' or '.join(LANGS)} (LANG=FILE)")
    return lang.strip(), path.strip()


def refuse_binary(flag: str, path: Path) -> None:
    """Stop when a text input looks like a binary file (NUL bytes, mostly invalid UTF-8)."""
    reason = binary_reason(path)
    if reason:
        raise StageError(f"{flag}: {path} does not look like text ({reason}); give a UTF-8 text file")


def check_text_specs(specs: list[str]) -> list[tuple[str, Source]]:
    """The ``--text`` specs as (spec, source), each checked (form, language, files that exist and look
    like text) before anything is read or loaded."""
    parsed = [parse_text_spec(spec) for spec in specs]
    out = []
    for spec, (lang, path) in zip(specs, parsed):
        source = Source(path, lang, name=f"text:{Path(path).name}")
        for f in source.files():
            if f.is_file() and not f.name.endswith(".parquet"):
                refuse_binary("--text", f)
        out.append((spec, source))
    return out


def _for_eval(spec: str, e: StageError) -> StageError:
    """A reader's error (tonsai.data.sources, written for prepare_dataset.py) in the terms of eval_model.py,
    which reads the 'text' field and has neither --text-column nor --bad-records."""
    msg = str(e)
    if "; pass --text-column" in msg:
        msg = (msg.split("; pass --text-column")[0] + "; eval_model.py --text reads each record's 'text' field "
               "(it has no --text-column): rename the field to 'text', or fix or remove the record")
    msg = msg.replace(f", {SKIP_HINT}", "")
    return StageError(f"--text {spec}: {msg}")


def _read_texts(spec: str, source: Source, stats: ReadStats) -> list[str]:
    """The non-empty normalized documents of a --text file. Invalid UTF-8 is treated as prepare_dataset.py
    treats it by default (tonsai.data.sources): decoded with U+FFFD, counted, and warned about, here
    naming the file and the first such line."""
    # invalid_utf8="skip" only marks such documents (skip_reason); they are scored, as prepare keeps them
    opts = ReadOptions(invalid_utf8="skip")
    texts, bad = [], []
    try:
        for d in iter_documents(source, stats, options=opts):
            if d.skip_reason == "invalid_utf8":
                bad.append(d.location)
            text = normalize(d.text).strip()
            if text:
                texts.append(text)
    except StageError as e:
        raise _for_eval(spec, e) from e
    if stats.invalid_utf8_lines:
        log.warning("--text %s: %d line(s) of %s are not valid UTF-8%s; they are scored with U+FFFD in place of "
                    "the bad bytes. Is it a text file in UTF-8? Convert it (iconv -f ENCODING -t UTF-8) and rerun "
                    "for figures of the text itself", spec, stats.invalid_utf8_lines, source.path,
                    f" (the first: {bad[0]})" if bad else "")
    return texts


def text_sets(specs: list[str]) -> tuple[list[EvalSet], list[dict]]:
    """The --text files as sets, and what identifies each (language, file, SHA-256) for the report."""
    sets, described = [], []
    for spec, source in check_text_specs(specs):
        lang, path = source.lang, source.path
        stats = ReadStats()
        texts = _read_texts(spec, source, stats)
        if not texts:
            raise StageError(f"--text {spec}: {path} holds no non-empty document; nothing to evaluate")
        sets.append(EvalSet(source.name, lang, texts))
        described.append({"source": source.name, "lang": lang, "file": str(path), "sha256": file_sha256(path),
                          "documents": len(texts), "invalid_utf8_lines": stats.invalid_utf8_lines})
    return sets, described


def dataset_sets(dataset_dir: str | Path, split: str) -> tuple[list[EvalSet], dict]:
    """The split's documents as runs of one language and source, in the split's order (so that
    :func:`language_streams` joins each language as training's validation does), and what identifies the
    split for the report: the split's name, the dataset manifest's SHA-256 (which changes whenever prepare
    is rerun) and ``rows_sha256``, a SHA-256 of the rows as scored (each row's language and text, in the
    split's order), which identifies the set by its content (:mod:`tonsai.eval.compare`)."""
    dd, _ = load_prepared(dataset_dir)
    if split not in dd:
        raise StageError(f"{dataset_dir} has no split {split!r}; it has {sorted(dd)}")
    ds = dd[split]
    if len(ds) == 0:
        raise StageError(f"{dataset_dir} split {split!r} is empty: nothing to evaluate")
    runs: dict[str, list[EvalSet]] = {}  # per language, runs of consecutive documents from one source
    rows = hashlib.sha256()  # the rows as scored: what identifies the set, whatever run of prepare wrote them
    for text, lang, source in zip(ds["text"], ds["lang"], ds["source"]):
        lang_runs = runs.setdefault(lang, [])
        if not lang_runs or lang_runs[-1].source != source:
            lang_runs.append(EvalSet(source, lang, []))
        # prepared text is already normalized; normalizing again is a no-op that guards old datasets
        lang_runs[-1].texts.append(normalize(text))
        rows.update(json.dumps([lang, lang_runs[-1].texts[-1]], ensure_ascii=False).encode("utf-8") + b"\n")
    sets = [s for lang in sorted(runs) for s in runs[lang]]
    described = {"dataset_dir": str(dataset_dir), "dataset_manifest_sha256": dataset_hash(dataset_dir),
                 "split": split, "documents": len(ds), "rows_sha256": rows.hexdigest()}
    return sets, described


def check_parallel_files(paths: list[str | Path]) -> list[Path]:
    """The ``--parallel`` files, each an existing text file (checked before a model loads)."""
    out = [Path(p) for p in paths]
    for p in out:
        check_text_file(p, "--parallel")
    return out


def parallel_pairs(km_file: str | Path, en_file: str | Path) -> tuple[list[str], list[str], int]:
    """Aligned (Khmer, English) sentences, normalized; pairs with an empty side are skipped and counted."""
    km, en = read_aligned(km_file, en_file, "--parallel")
    out_km, out_en, skipped = [], [], 0
    for a, b in zip(km, en):
        a, b = normalize(a).strip(), normalize(b).strip()
        if a and b:
            out_km.append(a)
            out_en.append(b)
        else:
            skipped += 1
    if not out_km:
        raise StageError(f"--parallel: {km_file} and {en_file} hold no pair of non-empty lines")
    return out_km, out_en, skipped
