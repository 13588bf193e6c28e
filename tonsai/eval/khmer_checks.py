"""Checks on text a model generated in Khmer (KHMER.md sections 1 and 2).

A model trained on normalized text should write normalized, well-formed Khmer. For the outputs of
one task:

- ``km_normalized_share``: share of outputs that :func:`tonsai.text.normalize` leaves unchanged
  (an output with a stray zero-width space or a vowel before its subscript is not normalized);
- ``km_invalid_cluster_rate``: invalid Khmer clusters over all Khmer clusters of all outputs
  (:func:`tonsai.text.quality.invalid_cluster_counts`; 0.0 when there is no Khmer);
- ``km_script_share``: Khmer characters over all letters of all outputs
  (:func:`tonsai.text.script.count_scripts`; 0.0 when there are no letters): 1.0 for pure Khmer,
  low when the model answers a Khmer prompt in Latin script;
- ``km_empty_share``: share of outputs that are empty or whitespace (the other three ignore nothing,
  but an empty output is trivially normalized and contributes no clusters).
"""

from __future__ import annotations

from typing import Sequence

from tonsai.text.normalize import normalize
from tonsai.text.quality import invalid_cluster_counts
from tonsai.text.script import count_scripts

CHECK_METRICS = ("km_normalized_share", "km_invalid_cluster_rate", "km_script_share", "km_empty_share")


def khmer_output_checks(outputs: Sequence[str]) -> dict[str, float]:
    """The checks above over ``outputs`` (raw generated text, before any normalization)."""
    if not outputs:
        raise ValueError("no outputs to check")
    invalid = clusters = khmer = letters = 0
    for text in outputs:
        bad, total = invalid_cluster_counts(text)
        invalid += bad
        clusters += total
        counts = count_scripts(text)
        khmer += counts.khmer
        letters += counts.letters
    n = len(outputs)
    return {
        "km_normalized_share": sum(normalize(t) == t for t in outputs) / n,
        "km_invalid_cluster_rate": invalid / clusters if clusters else 0.0,
        "km_script_share": khmer / letters if letters else 0.0,
        "km_empty_share": sum(not t.strip() for t in outputs) / n,
    }
