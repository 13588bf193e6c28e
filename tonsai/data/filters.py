"""Document filters. Each takes a normalized document and returns ``None`` to keep it or a short
reason string to drop it; the prepare stage counts every drop by reason."""

from __future__ import annotations

from tonsai.text.quality import quality_signals
from tonsai.text.script import RoutingThresholds, ScriptCounts, route


def too_short(text: str, min_chars: int) -> str | None:
    """Drop documents with fewer than ``min_chars`` non-space characters."""
    n = len(text) - text.count(" ") - text.count("\n") - text.count("\t")
    return "too_short" if n < min_chars else None


def script_mismatch(counts: ScriptCounts, declared: str, thresholds: RoutingThresholds) -> str | None:
    """Drop documents whose script routing disagrees with the language declared for their source."""
    routed = route(counts, thresholds)
    return None if routed == declared else f"script_{routed}_in_{declared}_source"


def bad_quality(text: str) -> str | None:
    """Drop documents over a quality threshold of :mod:`tonsai.text.quality` (U+FFFD rate,
    invalid Khmer clusters, legacy-font suspicion); the reason names the first flag raised."""
    flags = quality_signals(text).flags
    return flags[0] if flags else None
