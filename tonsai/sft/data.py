"""Reading instruction data: conversations from JSON lines, Parquet or Hub datasets, cleaned,
deduplicated, split and weighted.

Inputs (:class:`SftSource`): a ``.jsonl`` / ``.json`` file (optionally ``.gz`` / ``.zst``), a
``.parquet`` file, a folder or glob of them, or ``hf:NAME[:CONFIG[:SPLIT]]`` for a Hugging Face
dataset (streamed; NAME may be a local folder of json/parquet files): the readers and the Hub
syntax of :mod:`tonsai.data.sources`. Each record holds one conversation in one of the common shapes:

- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``;
- ShareGPT: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}``;
- instruction: ``{"instruction": "...", "input": "..." (optional), "output": "..."}``, which becomes a
  user turn (the instruction, then a blank line and the input when there is one) and an assistant turn.

A ``"system"`` field beside ``messages`` or ``instruction`` becomes the system message (when the
conversation has none). Every text is normalized with :func:`tonsai.text.normalize` and stripped;
an empty system message is removed.

Conversations are dropped, and counted per source as ``dropped:<reason>``, for these reasons, in
the order they are checked: ``malformed`` (bad JSON or a record of no known shape, logged with
file and line; a file whose every record is malformed is an error naming it),
``unsupported_role`` (a role other than system, user and assistant, e.g. tool calls),
``empty_content``, ``no_assistant_turn``, ``roles_out_of_order`` (after an optional system
message the turns must alternate user, assistant, ..., and end with the assistant),
``special_token_in_text`` (a text holding a chat marker or tonsai's ``<|endoftext|>`` /
``<|pad|>``: the tokenizer would read it as that special token, so a user could forge a turn),
``no_letters``, ``not_khmer_or_english`` (routing found neither script), the quality filters'
reasons (below), and ``duplicate`` (the same normalized conversation, roles included, seen
earlier: the xxh3 key of :func:`tonsai.data.dedup.exact_key`; the first in source order is kept).
For every source ``read == kept + sum(dropped:*)`` and ``kept == validation + train_pool``;
``train`` counts its rows in the training list after weighting.

The quality filters are the prepare stage's (:mod:`tonsai.data.filters`) with a cut for short
chat turns. On the conversation's texts joined by newlines: at least 2 word-like units and one
letter (no minimum length: ``"Hi"`` / ``"Hello!"`` is a real exchange), digits and symbols each up
to half of the characters (:data:`CHAT_FILTERS`: arithmetic and unit questions), prepare's URL
share, and the U+FFFD, invalid Khmer cluster and legacy-font checks. Repeated lines and repeated
n-grams of about five words (5 words, 12 Khmer syllables: :func:`tonsai.data.filters.ngram_units`)
are checked turn by turn with prepare's thresholds, never across turns: an answer that repeats the
question's words ("What is the capital of Cambodia?" / "The capital of Cambodia is ...") is
normal, and alone it can exceed the 30% repeated share of a short exchange; a turn that loops on
itself is the defect those checks are for. Prepare's length and script-mismatch filters do not run:
a declared language wins.

Language: a source's ``lang`` when given, otherwise the script routing of
:func:`tonsai.text.script.route` on the whole conversation, with ``khmer_min_chars=1`` (a short
Khmer exchange is still Khmer): ``km``, ``en`` or ``mixed`` (translation exercises mix both).

Validation: per language, the same rule as the prepare stage's per-source cut: the kept
conversations with the smallest :func:`tonsai.data.dedup.id_hash` of their id, ``ceil(fraction *
n)`` of them but at least ``min_validation``, always leaving one for training (none when a language
has a single conversation). The cut depends only on the ids, so changing weights or the seed keeps
it. Ids are ``<source name>:<file>:<line>`` (``<name>:<split>:<row>`` for Hub rows).

Weights: each source's training conversations appear ``floor(weight)`` times plus a seeded random
subset of ``weight - floor(weight)`` of them; the whole training list is then shuffled with the seed.

Khmer/English balance (``khmer_share``, optional): after weighting, the Khmer and the English
training conversations are each scaled, the same way, to ``khmer_share`` and ``1 - khmer_share`` of
their sum (the total stays; ``mixed`` ones are kept as they are). Counted by conversations, not
tokens: a conversation is the unit the loss sees whole. ``SftData.shares`` records what came out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tonsai.data.dedup import exact_key, id_hash
from tonsai.data.filters import (
    FilterThresholds,
    bad_quality,
    ngram_units,
    repeated_lines,
    repeated_ngrams,
    symbol_ratios,
    too_few_units,
    units,
)
from tonsai.data.sources import (
    HF_PREFIX,
    SKIP_HINT,
    BadRecord,
    ReadStats,
    Source,
    json_records,
    file_kind,
    open_binary,
    open_hub,
    read_error,
)
from tonsai.errors import StageError
from tonsai.sft.template import MARKERS, ROLES
from tonsai.text import normalize
from tonsai.text.script import RoutingThresholds, count_scripts, route

log = logging.getLogger(__name__)

CHAT_FILTERS = FilterThresholds(min_chars=0, min_units=2, max_digit_frac=0.5, max_symbol_frac=0.5)
CHAT_ROUTING = RoutingThresholds(khmer_min_chars=1)
SFT_LANGS = ("km", "en", "mixed")
FORBIDDEN = tuple(MARKERS) + ("<|endoftext|>", "<|pad|>")  # tonsai.tokenizer.bpe's EOT and PAD
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
MAX_WARNINGS = 20  # malformed records logged one by one per source; the rest are counted


@dataclasses.dataclass
class SftSource:
    """One instruction dataset: a path (file, folder, glob) or ``hf:NAME[:CONFIG[:SPLIT]]``, its
    weight (how many times its training conversations are used; fractions subsample) and its
    language (``None``: decided per conversation by script routing)."""

    path: str
    weight: float = 1.0
    lang: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"instruction source {self.path}: weight {self.weight!r} must be a finite number >= 0")
        if self.lang is not None and self.lang not in SFT_LANGS:
            raise ValueError(f"instruction source {self.path}: lang {self.lang!r} must be one of {list(SFT_LANGS)} "
                             f"or left out (decided per conversation)")

    @property
    def name(self) -> str:
        base = self.path[len(HF_PREFIX):].split(":")[0] if self.path.startswith(HF_PREFIX) else self.path
        return Path(base.rstrip("/")).name or base


@dataclasses.dataclass
class Conversation:
    id: str
    lang: str
    source: str  # the SftSource's path
    messages: list[dict[str, str]]  # {"role", "content"}, normalized


@dataclasses.dataclass
class SftData:
    train: list[Conversation]
    validation: dict[str, list[Conversation]]  # per language
    counts: dict[str, dict[str, int]]  # per source path: read, kept, validation, train_pool, train, dropped:*
    shares: dict[str, float] = dataclasses.field(default_factory=dict)  # per language, of the training list


def _records(src: SftSource) -> Iterator[tuple[str, int, str, list[dict[str, str]] | BadRecord]]:
    """(file or split, record number, location, the record's messages or a :class:`BadRecord`) of a
    source. A file (or Hub split) whose every record is malformed is an error: it is not
    instruction data, or not in a supported shape."""
    source = Source(src.path, lang=src.lang or "instruction")
    if source.is_hub:
        yield from _parsed(src.path, ((source.hub_args()[2], i, f"{src.path}#row{i}", row)
                                      for i, row in enumerate(open_hub(source))))
        return
    not_records = ("is not JSON lines, JSON or Parquet (each optionally .gz or .zst); instruction data needs "
                   "records with messages, conversations or instruction/output fields")
    if Path(src.path).is_file() and file_kind(Path(src.path)) not in ("json", "parquet"):
        raise StageError(f"instruction source {src.path} {not_records}")
    kinds = {f: file_kind(f) for f in source.files()}
    usable = [f for f, kind in kinds.items() if kind in ("json", "parquet")]
    if not usable:
        raise StageError(f"instruction source {src.path}: none of its {len(kinds)} file(s) {not_records}")
    if len(usable) < len(kinds):
        left = [f.name for f, kind in kinds.items() if kind not in ("json", "parquet")]
        log.warning("instruction source %s: %d file(s) that are not JSON lines, JSON or Parquet are left out: %s%s",
                    src.path, len(left), ", ".join(left[:5]), ", ..." if len(left) > 5 else "")
    for path in usable:
        yield from _parsed(str(path), _json_file(path) if kinds[path] == "json" else _parquet_file(path))


def _parsed(name: str, records) -> Iterator[tuple[str, int, str, list[dict[str, str]] | BadRecord]]:
    total = malformed = 0
    first_bad = None
    for rel, n, where, obj in records:
        total += 1
        try:
            yield rel, n, where, parse_record(obj, where)
        except BadRecord as e:
            e = BadRecord(e.reason, str(e).replace(f", {SKIP_HINT}", ""))  # the prepare stage's flag is not ours
            malformed += 1
            first_bad = first_bad or e
            yield rel, n, where, e
    if total and malformed == total:
        raise StageError(f"{name}: none of its {total} records is a conversation, e.g. {first_bad}. Instruction data "
                         f"needs JSON records with 'messages' (role/content), 'conversations' (from/value) or "
                         f"'instruction' and 'output'")


def _json_file(path: Path) -> Iterator[tuple[str, int, str, object]]:
    try:
        with open_binary(path) as f:
            for n, where, obj, _invalid in json_records(f, path, ReadStats()):
                yield path.name, n, where, obj
    except (OSError, EOFError) as e:
        raise read_error(path, e) from e


def _parquet_file(path: Path) -> Iterator[tuple[str, int, str, object]]:
    try:
        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield path.name, i, f"{path}#row{i}", row
                i += 1
    except (pa.ArrowException, OSError) as e:
        raise StageError(f"{path}: cannot read this Parquet file ({e}); it may be truncated or damaged") from e


def _bad(where: str, problem: str) -> BadRecord:
    return BadRecord("malformed", f"{where}: {problem}")


def parse_record(obj, where: str) -> list[dict[str, str]]:
    """The messages of one record in any supported shape (raw text, roles as given); raises
    :class:`BadRecord` naming ``where`` and what is wrong."""
    if isinstance(obj, BadRecord):
        raise obj
    if not isinstance(obj, dict):
        raise _bad(where, f"the record is a {type(obj).__name__}, not an object with 'messages', 'conversations' "
                          f"or 'instruction' and 'output'")
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise _bad(where, "field 'system' is not a string")
    if "messages" in obj:
        messages = _turns(obj["messages"], where, "messages", "role", "content", None)
    elif "conversations" in obj:
        messages = _turns(obj["conversations"], where, "conversations", "from", "value", SHAREGPT_ROLES)
    elif "instruction" in obj and "output" in obj:
        fields = {k: obj.get(k) for k in ("instruction", "input", "output")}
        bad = [k for k, v in fields.items() if not isinstance(v, str) and (v is not None or k != "input")]
        if bad:
            raise _bad(where, f"field {bad[0]!r} is a {type(fields[bad[0]]).__name__}, not a string")
        prompt = fields["instruction"] + (f"\n\n{fields['input']}" if (fields["input"] or "").strip() else "")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": fields["output"]}]
    else:
        raise _bad(where, f"no 'messages', 'conversations' or 'instruction' and 'output' fields (found {sorted(obj)})")
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _turns(turns, where: str, field: str, role_key: str, text_key: str, role_map) -> list[dict[str, str]]:
    if not isinstance(turns, list):
        raise _bad(where, f"field {field!r} is not a list of turns")
    out = []
    for k, t in enumerate(turns):
        if not isinstance(t, dict) or not isinstance(t.get(role_key), str) or not isinstance(t.get(text_key), str):
            raise _bad(where, f"{field}[{k}] must be an object with string fields {role_key!r} and {text_key!r}, "
                              f"got {t!r}"[:300])
        role = role_map.get(t[role_key], t[role_key]) if role_map else t[role_key]
        out.append({"role": role, "content": t[text_key]})
    return out


def clean(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str | None]:
    """Normalized, stripped messages (empty system messages removed) and the reason to drop them, or None."""
    out = [{"role": m["role"], "content": normalize(m["content"]).strip()} for m in messages]
    out = [m for m in out if m["role"] != "system" or m["content"]]
    roles = [m["role"] for m in out]
    if any(r not in ROLES for r in roles):
        return out, "unsupported_role"
    if any(not m["content"] for m in out):
        return out, "empty_content"
    if "assistant" not in roles:
        return out, "no_assistant_turn"
    turns = roles[1:] if roles[0] == "system" else roles
    if len(turns) % 2 or turns != ["user", "assistant"] * (len(turns) // 2):
        return out, "roles_out_of_order"
    if any(tok in m["content"] for m in out for tok in FORBIDDEN):
        return out, "special_token_in_text"
    return out, None


def _language(messages: list[dict[str, str]], declared: str | None) -> tuple[str | None, str | None]:
    """(language, drop reason) of a cleaned conversation."""
    text = "\n".join(m["content"] for m in messages)
    counts = count_scripts(text)
    if not counts.letters:
        return None, "no_letters"
    lang = declared or route(counts, CHAT_ROUTING)
    if lang not in SFT_LANGS:
        return None, "not_khmer_or_english"
    t = CHAT_FILTERS
    reason = too_few_units(units(text), t.min_units) or symbol_ratios(text, counts, t) or bad_quality(text, counts)
    for m in messages:
        reason = reason or repeated_lines(m["content"], t.max_dup_line_frac) or repeated_ngrams(
            units(m["content"]), t.max_dup_ngram_frac, ngram_units(count_scripts(m["content"])))
    return lang, reason


def _read_source(src: SftSource, seen: set[tuple[int, int]], counts: dict[str, int]) -> list[Conversation]:
    """The kept conversations of one source, counting every record in ``counts``."""
    kept: list[Conversation] = []
    first_drop: dict[str, str] = {}
    warned = 0
    for rel, n, where, messages in _records(src):
        counts["read"] += 1
        if isinstance(messages, BadRecord):
            counts["dropped:malformed"] += 1
            warned += 1
            if warned <= MAX_WARNINGS:
                log.warning("skipped: %s", messages)
            continue
        messages, reason = clean(messages)
        lang = None
        if reason is None:
            lang, reason = _language(messages, src.lang)
        if reason is None:
            key = exact_key("\x1e".join(f"{m['role']}\x1f{m['content']}" for m in messages))
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason:
            counts[f"dropped:{reason}"] += 1
            first_drop.setdefault(reason, where)
            continue
        kept.append(Conversation(f"{src.name}:{rel}:{n}", lang, src.path, messages))
    if warned > MAX_WARNINGS:
        log.warning("%s: %d more malformed records skipped", src.path, warned - MAX_WARNINGS)
    if first_drop:  # where to look: the first conversation dropped for each reason
        log.info("%s: first dropped for each reason: %s", src.path,
                 ", ".join(f"{reason} at {where}" for reason, where in first_drop.items()))
    counts["kept"] = len(kept)
    return kept


def validation_split(convs: list[Conversation], fraction: float, min_validation: int) -> tuple[list, list]:
    """(training, validation) of one language's conversations, by the prepare stage's rule."""
    if len(convs) < 2:
        return list(convs), []
    n_val = min(len(convs) - 1, max(min_validation, math.ceil(fraction * len(convs))))
    order = sorted(range(len(convs)), key=lambda i: (id_hash(convs[i].id), i))
    held = set(order[:n_val])
    return ([c for i, c in enumerate(convs) if i not in held], [c for i, c in enumerate(convs) if i in held])


def _weighted(pool: list[Conversation], weight: float, rng: np.random.Generator) -> list[Conversation]:
    whole = math.floor(weight)
    out = pool * whole
    extra = round((weight - whole) * len(pool))
    if extra:
        out += [pool[i] for i in sorted(rng.choice(len(pool), size=extra, replace=False))]
    return out


def balance_languages(rows: list[Conversation], khmer_share: float, rng: np.random.Generator) -> list[Conversation]:
    """``rows`` with the Khmer and English conversations scaled to ``khmer_share`` of their sum (see the module)."""
    if not 0.0 < khmer_share < 1.0:
        raise StageError(f"Khmer share {khmer_share} must be between 0 and 1 (exclusive)")
    by = {lang: [r for r in rows if r.lang == lang] for lang in ("km", "en")}
    missing = [lang for lang, pool in by.items() if not pool]
    if missing:
        raise StageError(f"a Khmer share was asked for, but no {missing[0]} training conversation is left: add "
                         f"{'Khmer' if missing[0] == 'km' else 'English'} data or leave the share out")
    total = len(by["km"]) + len(by["en"])
    want = {"km": round(khmer_share * total)}
    want["en"] = total - want["km"]
    return [r for r in rows if r.lang not in by] + [
        c for lang in ("km", "en") for c in _weighted(by[lang], want[lang] / len(by[lang]), rng)]


def load_sft_data(sources: list[SftSource], *, validation_fraction: float = 0.05, min_validation: int = 1,
                  seed: int = 0, khmer_share: float | None = None) -> SftData:
    """Read, clean, deduplicate, split and weight the conversations of ``sources`` (see the module)."""
    if not sources:
        raise StageError("no instruction sources given")
    paths = [s.path for s in sources]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise StageError(f"instruction source {twice[0]} is listed twice; give it once with the weight you want")
    if not 0 <= validation_fraction < 1 or min_validation < 0:
        raise StageError(f"validation fraction {validation_fraction} must be in [0, 1) and the minimum "
                         f"{min_validation} >= 0")
    seen: set[tuple[int, int]] = set()
    counts: dict[str, dict[str, int]] = {}
    kept: list[Conversation] = []
    for src in sources:
        c = counts[src.path] = _Counts()
        kept += _read_source(src, seen, c)
    if not kept:
        raise StageError(f"no conversation left in {paths} after cleaning: {_summary(counts)}")
    by_lang: dict[str, list[Conversation]] = {}
    for conv in kept:
        by_lang.setdefault(conv.lang, []).append(conv)
    validation: dict[str, list[Conversation]] = {}
    pools: dict[str, list[Conversation]] = {s.path: [] for s in sources}
    for lang in sorted(by_lang):
        train, validation[lang] = validation_split(by_lang[lang], validation_fraction, min_validation)
        for conv in train:
            pools[conv.source].append(conv)
        for conv in validation[lang]:
            counts[conv.source]["validation"] += 1
    rows: list[Conversation] = []
    for i, src in enumerate(sources):
        counts[src.path]["train_pool"] = len(pools[src.path])
        mine = _weighted(pools[src.path], src.weight, np.random.default_rng([seed, i]))
        counts[src.path]["train"] = len(mine)
        rows += mine
    if khmer_share is not None:
        rows = balance_languages(rows, khmer_share, np.random.default_rng([seed, len(sources)]))
    order = np.random.default_rng(seed).permutation(len(rows))
    shares = {lang: sum(r.lang == lang for r in rows) / len(rows) for lang in sorted({r.lang for r in rows})}
    return SftData([rows[i] for i in order], validation, {k: dict(v) for k, v in counts.items()}, shares)


class _Counts(dict):
    """Counts that start at zero, with read/kept/validation/train first."""

    def __init__(self):
        super().__init__(read=0, kept=0, validation=0, train_pool=0, train=0)

    def __missing__(self, key: str) -> int:
        return 0


def _summary(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{p}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v) for p, c in counts.items())
