"""Weighted mixing of sources and languages, measured in characters.

The unit is characters of normalized text (not bytes: a Khmer character is 3 UTF-8 bytes, an
English letter 1; not tokens: they depend on a tokenizer that does not exist yet). Every source
gets a share of the training characters (:func:`source_shares`: language weights times weights
inside a language, or temperature sampling, or UniMax). With shares ``s``, available characters
``C`` and at most ``E`` passes over a source, the mixture's size is the largest total every source
can fill, ``T = min(C * E / s)``, or a requested target when smaller (:func:`plan_sources`). Each
source then contributes ``s * T`` characters: whole passes, then a prefix of a seeded shuffled
pass, cut at the document that brings the running total closest to the target. The tokenizer's
``--khmer-share`` / ``--max-chars`` sampling uses the same planner with one group per language.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import xxhash
from typing import Callable


def normalize_weights(weights: dict[str, float]) -> dict[str, float]:
    for lang, w in weights.items():
        if not (math.isfinite(w) and w >= 0):  # nan passes a plain w < 0 test
            raise ValueError(f"weight for {lang} is {w}; weights must be >= 0 and finite")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("all mixing weights are zero; give at least one language a positive weight")
    return {lang: w / total for lang, w in weights.items()}


# ---------------------------------------------------------------------------------------------
# Source-level mixing for the streaming prepare stage: shares per source, several strategies.

STRATEGIES = ("weights", "temperature", "unimax")


@dataclasses.dataclass
class SourcePlan:
    name: str
    lang: str
    share: float  # requested share of all training characters
    available_chars: int
    max_epochs: float
    target_chars: int = 0
    selected_chars: int = 0
    selected_docs: int = 0  # document copies, repeats included
    epochs: float = 0.0


def unweighted(weights: dict[str, float | None]) -> list[str]:
    """The sources (of one language: name -> weight) without a weight while others have one: a
    language's sources all have weights or none do (prepare checks it before any work, the plan
    again here)."""
    missing = [name for name, w in weights.items() if w is None]
    return missing if len(missing) < len(weights) else []


def _within_language(sources: list[dict], alpha: float | None) -> dict[str, float]:
    """Shares of a language's sources: their weights, or natural (by characters) when none is
    given, or characters**alpha with temperature sampling."""
    if alpha is not None:
        raw = {s["name"]: float(s["chars"]) ** alpha if s["chars"] else 0.0 for s in sources}
    elif any(s["weight"] is not None for s in sources):
        missing = unweighted({s["name"]: s["weight"] for s in sources})
        if missing:
            raise ValueError(f"sources {missing} have no weight while others of their language do; "
                             f"give every source of a language a weight, or none")
        raw = {s["name"]: float(s["weight"]) for s in sources}
    else:
        raw = {s["name"]: float(s["chars"]) for s in sources}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"sources {[s['name'] for s in sources]}: all weights are zero or nothing is left")
    return {k: v / total for k, v in raw.items()}


def unimax_budgets(chars: dict[str, int], budget: float, max_epochs: dict[str, float]) -> dict[str, float]:
    """UniMax (Chung et al., 2023): spread ``budget`` uniformly over languages, none beyond
    ``max_epochs`` passes; what a small language cannot use goes to the others."""
    out: dict[str, float] = {}
    left = budget
    langs = sorted(chars, key=lambda lang: chars[lang] * max_epochs[lang])
    for i, lang in enumerate(langs):
        fair = left / (len(langs) - i)
        out[lang] = min(fair, chars[lang] * max_epochs[lang])
        left -= out[lang]
    return out


def source_shares(sources: list[dict], lang_weights: dict[str, float], strategy: str = "weights",
                  alpha: float = 0.3, budget: float | None = None,
                  max_epochs: dict[str, float] | None = None) -> dict[str, float]:
    """Requested share of all training characters for each source.

    ``sources``: dicts with name, lang, weight (or None) and chars (available training characters).
    ``weights``: language shares from ``lang_weights``, sources inside a language by their weights.
    ``temperature``: language share proportional to chars**alpha (alpha=1: natural; 0: uniform),
    and the same inside a language. ``unimax``: languages get equal character budgets capped at
    ``max_epochs`` passes (surplus to the others); sources inside a language by their weights.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mixing strategy {strategy!r}; choose from {STRATEGIES}")
    by_lang: dict[str, list[dict]] = {}
    for s in sources:
        by_lang.setdefault(s["lang"], []).append(s)
    lang_chars = {lang: sum(s["chars"] for s in ss) for lang, ss in by_lang.items()}
    if strategy == "temperature":
        lw = normalize_weights({lang: float(c) ** alpha if c else 0.0 for lang, c in lang_chars.items()})
        inner_alpha: float | None = alpha
    elif strategy == "unimax":
        epochs = max_epochs or {}
        lang_epochs = {lang: min(epochs.get(s["name"], s.get("max_epochs", 1.0)) for s in ss)
                       for lang, ss in by_lang.items()}
        b = budget if budget else float(sum(lang_chars.values()))
        lw = normalize_weights(unimax_budgets(lang_chars, b, lang_epochs))
        inner_alpha = None
    else:
        lw = normalize_weights({lang: lang_weights.get(lang, 0.0) for lang in by_lang})
        inner_alpha = None
    shares = {}
    for lang, ss in by_lang.items():
        if lw[lang] == 0:
            shares.update({s["name"]: 0.0 for s in ss})
            continue
        for name, w in _within_language(ss, inner_alpha).items():
            shares[name] = lw[lang] * w
    return shares


SELECT_CHUNK = 1 << 20  # positions of the shuffled pass whose lengths are gathered at once


def select_passes(n: int, total: int, target: int, rng: np.random.Generator,
                  gather: Callable[[np.ndarray], np.ndarray]) -> tuple[int, np.ndarray, int]:
    """How many times to take each of ``n`` documents so the taken lengths sum closest to
    ``target``: whole seeded passes, then a prefix of one more shuffled pass, cut at the closest
    document. The lengths stay on disk: ``gather(idx)`` returns the lengths of documents ``idx``
    (of ``n``, summing to ``total``). Returns ``(full, extra, chars)``: every
    document is taken ``full`` times and those in ``extra`` (sorted) once more; ``chars`` is the
    length taken in all. Holds the shuffled order of the ``n`` documents (4 bytes per document
    below 2**31 documents; numpy's seeded shuffle is the same on int32 and int64) and
    ``SELECT_CHUNK`` gathered lengths; nothing when whole passes reach the target."""
    if total == 0 or target <= 0:
        return 0, np.zeros(0, dtype=np.int64), 0
    full, rem = divmod(int(target), total)
    if not rem:
        return full, np.zeros(0, dtype=np.int64), full * total
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    rng.shuffle(order)  # the same permutation as rng.permutation(n)
    before = 0  # cumulative length before the current chunk
    for start in range(0, n, SELECT_CHUNK):
        cs = np.cumsum(np.asarray(gather(order[start:start + SELECT_CHUNK]), dtype=np.int64)) + before
        if int(cs[-1]) >= rem:
            k = int(np.searchsorted(cs, rem))  # cs[k] >= rem
            prev = int(cs[k - 1]) if k else before
            take = start + (k + 1 if int(cs[k]) - rem <= rem - prev else k)
            taken = int(cs[k]) if take > start + k else prev
            break
        before = int(cs[-1])
    else:  # unreachable: the lengths sum to total > rem
        raise AssertionError("lengths do not sum to total")
    extra = np.sort(order[:take])
    return full, extra, full * total + taken


def plan_sources(lengths: dict[str, np.ndarray], langs: dict[str, str], shares: dict[str, float],
                 max_epochs: dict[str, float], seed: int, target_chars: int | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, SourcePlan], int, bool]:
    """Copies per document for every source, so that character shares follow ``shares``.

    The mixture's total is the largest every source can fill within its ``max_epochs``:
    ``T = min_s(C_s * E_s / share_s)``, or ``target_chars`` when that is smaller. Returns the copy
    counts, the plans, the total and whether ``target_chars`` was reached.
    """
    lengths = {k: np.asarray(v, dtype=np.int64) for k, v in lengths.items()}
    sel, plans, total, reached = plan_sources_lazy(
        {k: (len(v), int(v.sum())) for k, v in lengths.items()}, lambda name, idx: lengths[name][idx],
        langs, shares, max_epochs, seed, target_chars)
    counts = {}
    for name, (full, extra) in sel.items():
        c = np.full(len(lengths[name]), full, dtype=np.int32)
        c[extra] += 1
        counts[name] = c
    return counts, plans, total, reached


def plan_sources_lazy(available: dict[str, tuple[int, int]], gather: Callable[[str, np.ndarray], np.ndarray],
                      langs: dict[str, str], shares: dict[str, float], max_epochs: dict[str, float], seed: int,
                      target_chars: int | None = None
                      ) -> tuple[dict[str, tuple[int, np.ndarray]], dict[str, SourcePlan], int, bool]:
    """:func:`plan_sources` with the documents' lengths on disk: ``available[name]`` is (documents,
    characters) of a source's training pool and ``gather(name, idx)`` the lengths of its documents
    ``idx``. Returns per source ``(full, extra)`` (every document ``full`` copies, those at the
    sorted positions ``extra`` one more; see :func:`select_passes`), the plans, the total and
    whether ``target_chars`` was reached."""
    plans = {name: SourcePlan(name, langs[name], shares[name], int(chars), max_epochs[name])
             for name, (_, chars) in available.items()}
    for p in plans.values():
        if p.share > 0 and p.available_chars == 0:
            raise ValueError(f"source {p.name} has a positive share but no training documents left after "
                             f"filtering and deduplication")
    cap = min(p.available_chars * p.max_epochs / p.share for p in plans.values() if p.share > 0)
    total = cap if not target_chars else min(cap, float(target_chars))
    reached = not target_chars or target_chars <= cap
    sel = {}
    for name, p in plans.items():
        p.target_chars = round(p.share * total)
        n = available[name][0]
        full, extra, chars = select_passes(
            n, p.available_chars, p.target_chars,
            np.random.default_rng([seed, xxhash.xxh3_64_intdigest(name.encode("utf-8"))]),
            lambda idx, name=name: gather(name, idx))
        sel[name] = (full, extra)
        p.selected_docs = full * n + len(extra)
        p.selected_chars = chars
        p.epochs = p.selected_chars / p.available_chars if p.available_chars else 0.0
    return sel, plans, int(total), reached
