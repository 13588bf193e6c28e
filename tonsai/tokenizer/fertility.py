"""How many tokens a tokenizer spends per character, word and sentence of each language, and the
Khmer/English parity on aligned sentences (Petrov et al. 2023), for tonsai's tokenizer and for
reference tokenizers side by side. Written as fertility.json and fertility.md.

Every tokenizer sees the same text, normalized with :func:`tonsai.text.normalize` (so the figures
for reference tokenizers differ a little from ../shared/data/tokenizers/FERTILITY.md, which kept
U+200B). No special tokens are counted. Words are counted with :func:`tonsai.text.word_count`
(khmer-nltk for Khmer), sentences are lines.

Reference tokenizers (``--compare``) are given as ``PATH`` or ``NAME=PATH``, optionally with
``@PATTERN`` for tiktoken rank files, which do not store their split regex:

- a folder holding one of the files below (``tokenizer.json`` of a Hugging Face or tonsai tokenizer,
  ``tokenizer.json.xz``, ``tokenizer.model``, or a single ``.model`` / ``.tiktoken`` file);
- ``tokenizer.json[.xz]``;
- a SentencePiece ``.model``;
- a tiktoken rank file (``.tiktoken``, or a ``tokenizer.model`` in that format, as Llama 3/4 ship);
  the pattern is one of :data:`TIKTOKEN_PATTERNS`, guessed from the name when not given.
"""

from __future__ import annotations

import base64
import dataclasses
import lzma
import math
from pathlib import Path
from typing import Callable, Sequence

import sentencepiece as spm
import tiktoken
from tokenizers import Tokenizer

from tonsai.atomic import write_json, write_text
from tonsai.data.prepared import load_prepared
from tonsai.errors import StageError
from tonsai.text.aligned import read_aligned
from tonsai.text import NORMALIZER_VERSION, normalize, word_count

TIKTOKEN_PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "llama3": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "qwen": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
            r"""|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "o200k": r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
             r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"""
             r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*"""
             r"""|\s*[\r\n]+|\s+(?!\S)|\s+""",
}
_PATTERN_HINTS = [("llama4", "o200k"), ("o200k", "o200k"), ("llama3", "llama3"), ("cl100k", "llama3"),
                  ("qwen", "qwen"), ("gpt2", "gpt2"), ("whisper", "gpt2")]
TONSAI = "tonsai"


@dataclasses.dataclass
class TokenCounter:
    """A named function from a batch of texts to their token counts."""

    name: str
    count: Callable[[list[str]], list[int]]
    kind: str


def _hf_counter(name: str, json_text: str) -> TokenCounter:
    tok = Tokenizer.from_str(json_text)
    tok.encode_special_tokens = True  # count special-token strings in the text as text
    return TokenCounter(name, lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)],
                        "tokenizers")


def _is_tiktoken_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(64)
    parts = head.split(b"\n", 1)[0].split()
    return len(parts) == 2 and parts[1].isdigit()


def _tiktoken_counter(name: str, path: Path, pattern: str | None) -> TokenCounter:
    if pattern is None:
        key = (name + " " + str(path)).lower()
        pattern = next((p for hint, p in _PATTERN_HINTS if hint in key), None)
        if pattern is None:
            raise StageError(f"--compare {path}: a tiktoken rank file does not store its split regex; "
                             f"add @PATTERN with one of {sorted(TIKTOKEN_PATTERNS)}")
    if pattern not in TIKTOKEN_PATTERNS:
        raise StageError(f"--compare {path}: unknown pattern {pattern!r}; use one of {sorted(TIKTOKEN_PATTERNS)}")
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    enc = tiktoken.Encoding(name=name, pat_str=TIKTOKEN_PATTERNS[pattern], mergeable_ranks=ranks, special_tokens={})
    return TokenCounter(name, lambda texts: [len(ids) for ids in enc.encode_ordinary_batch(texts)],
                        f"tiktoken ({pattern})")


def _tokenizer_file_in(folder: Path, spec: str) -> Path:
    """The tokenizer file of a folder: tokenizer.json[.xz], else tokenizer.model (SentencePiece or
    tiktoken ranks), else its only *.model or *.tiktoken file."""
    for name in ("tokenizer.json", "tokenizer.json.xz", "tokenizer.model"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.model")) + sorted(folder.glob("*.tiktoken"))
    if len(found) == 1:
        return found[0]
    what = f"several ({', '.join(p.name for p in found)}); name the file" if found else "none"
    raise StageError(f"--compare {spec}: a folder must hold tokenizer.json[.xz], tokenizer.model, or one .model or "
                     f".tiktoken file; this one has {what}")


def load_counter(spec: str) -> TokenCounter:
    """A :class:`TokenCounter` from a ``--compare`` spec (see the module docstring)."""
    name, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path_str, _, pattern = rest.partition("@")
    path = Path(path_str)
    if not name:
        name = path.name if path.is_dir() else (path.parent.name or path.stem)
    if path.is_dir():
        path = _tokenizer_file_in(path, spec)
    if not path.is_file():
        raise StageError(f"--compare {spec}: no such file or folder")
    if path.name.endswith(".json.xz"):
        return _hf_counter(name, lzma.open(path).read().decode("utf-8"))
    if path.suffix == ".json":
        return _hf_counter(name, path.read_text(encoding="utf-8"))
    if path.suffix == ".tiktoken" or _is_tiktoken_file(path):
        return _tiktoken_counter(name, path, pattern or None)
    if path.suffix == ".model":
        sp = spm.SentencePieceProcessor(model_file=str(path))
        return TokenCounter(name, lambda texts: [len(ids) for ids in sp.encode(texts)], "sentencepiece")
    raise StageError(f"--compare {spec}: not a tokenizer folder, tokenizer.json[.xz], .model or .tiktoken file")


@dataclasses.dataclass
class TextSet:
    """Texts of one language, normalized, with the counts that do not depend on a tokenizer."""

    lang: str
    texts: list[str]
    characters: int = 0
    words: int = 0

    def __post_init__(self) -> None:
        self.texts = [normalize(t) for t in self.texts]
        self.characters = sum(map(len, self.texts))
        self.words = sum(word_count(t) for t in self.texts)
        if self.characters == 0:
            raise StageError(f"the {self.lang} texts to measure fertility on are empty")


def _figures(counts: list[int], ts: TextSet) -> dict:
    tokens = sum(counts)
    return {"tokens": tokens, "per_1k_chars": 1000 * tokens / ts.characters,
            "per_word": tokens / ts.words if ts.words else math.nan,
            "per_sentence": tokens / len(ts.texts)}


def measure(counters: Sequence[TokenCounter], sets: dict[str, dict[str, TextSet]], parallel: set[str]) -> dict:
    """Figures for every counter on every named set of per-language texts."""
    report = {"normalizer_version": NORMALIZER_VERSION, "tokenizers": {c.name: c.kind for c in counters}, "sets": {}}
    for set_name, by_lang in sets.items():
        entry = {"parallel": set_name in parallel,
                 "languages": {lang: {"sentences": len(ts.texts), "characters": ts.characters, "words": ts.words}
                               for lang, ts in by_lang.items()},
                 "results": {}}
        for c in counters:
            per_text = {lang: c.count(ts.texts) for lang, ts in by_lang.items()}
            res = {lang: _figures(per_text[lang], by_lang[lang]) for lang in by_lang}
            if set_name in parallel:
                km, en = per_text["km"], per_text["en"]
                res["parity"] = sum(km) / sum(en)
                pairs = [k / e for k, e in zip(km, en) if e > 0]
                res["parity_mean_of_pairs"] = sum(pairs) / len(pairs)
            entry["results"][c.name] = res
        report["sets"][set_name] = entry
    return report


def render_markdown(report: dict) -> str:
    lines = ["# Tokenizer fertility", "",
             f"All tokenizers see the same text, normalized with `{report['normalizer_version']}`; no special "
             "tokens counted. Parity = Khmer tokens / English tokens on aligned sentences (ratio of totals).", ""]
    for set_name, entry in report["sets"].items():
        langs = list(entry["languages"])
        desc = ", ".join(f"{lang}: {v['sentences']:,} lines, {v['characters']:,} chars, {v['words']:,} words"
                         for lang, v in entry["languages"].items())
        lines += [f"## {set_name}", "", desc, ""]
        head = ["tokenizer"] + [f"{lang} tok/1k chars" for lang in langs] + [f"{lang} tok/word" for lang in langs] \
            + [f"{lang} tok/sentence" for lang in langs] + (["parity km/en"] if entry["parallel"] else [])
        lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        for name, res in entry["results"].items():
            cells = [f"**{name}**" if name == TONSAI else name]
            cells += [f"{res[lang]['per_1k_chars']:.1f}" for lang in langs]
            cells += [f"{res[lang]['per_word']:.2f}" for lang in langs]
            cells += [f"{res[lang]['per_sentence']:.1f}" for lang in langs]
            if entry["parallel"]:
                cells.append(f"{res['parity']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def read_parallel(km_file: str | Path, en_file: str | Path) -> dict[str, TextSet]:
    km, en = read_aligned(km_file, en_file, "--parity-file")
    return {"km": TextSet("km", km), "en": TextSet("en", en)}


def parity_file_field():
    return dataclasses.field(default_factory=list, metadata={
        "help": "aligned Khmer and English files (KM_FILE EN_FILE, repeatable) for the fertility report",
        "metavar": "FILE"})


def compare_field():
    return dataclasses.field(default_factory=list, metadata={
        "help": "reference tokenizers for the fertility report: [NAME=]PATH[@PATTERN] (tokenizer folder, "
                "tokenizer.json[.xz], SentencePiece .model, tiktoken rank file)", "metavar": "SPEC"})


def fertility_docs_field():
    return dataclasses.field(default=500, metadata={
        "help": "validation documents per language in the fertility report (Khmer word counting is slow)"})


def validation_texts(dataset_dir: str | Path, max_docs: int) -> dict[str, list[str]] | None:
    """The first ``max_docs`` validation documents per language of a prepared dataset, if it has them."""
    dd, _ = load_prepared(dataset_dir)
    if "validation" not in dd:
        return None
    out: dict[str, list[str]] = {}
    for text, lang in zip(dd["validation"]["text"], dd["validation"]["lang"]):
        docs = out.setdefault(lang, [])
        if len(docs) < max_docs:
            docs.append(text)
    return out


def write_fertility_report(out_dir: str | Path, tokenizer_dir: str | Path, parity_files: Sequence[str] = (),
                           compare: Sequence[str] = (), validation: dict[str, list[str]] | None = None) -> dict:
    """Measure tonsai's tokenizer in ``tokenizer_dir`` and the ``compare`` tokenizers; write
    fertility.json and fertility.md into ``out_dir``. Returns the report."""
    if len(parity_files) % 2:
        raise StageError("--parity-file takes pairs: KM_FILE EN_FILE [KM_FILE EN_FILE ...]")
    counters = [_hf_counter(TONSAI, (Path(tokenizer_dir) / "tokenizer.json").read_text(encoding="utf-8"))]
    counters += [load_counter(spec) for spec in compare]
    sets: dict[str, dict[str, TextSet]] = {}
    parallel = set()
    if validation:
        sets["validation split"] = {lang: TextSet(lang, texts) for lang, texts in sorted(validation.items()) if texts}
    for km_file, en_file in zip(parity_files[::2], parity_files[1::2]):
        name = Path(km_file).parent.name or Path(km_file).stem
        sets[name] = read_parallel(km_file, en_file)
        parallel.add(name)
    if not sets:
        raise StageError("nothing to measure: give --parity-file or a dataset with a validation split")
    report = measure(counters, sets, parallel)
    write_json(Path(out_dir) / "fertility.json", report)
    write_text(Path(out_dir) / "fertility.md", render_markdown(report))
    return report
