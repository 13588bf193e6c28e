"""Checks on text a model generated in Khmer (KHMER.md sections 1 and 2).

A model trained on normalized text should write normalized, well-formed Khmer. For the outputs of
one task:

- ``km_normalized_share``: share of the non-empty outputs that :func:`tonsai.text.normalize`
  leaves unchanged (an output with a stray zero-width space or a vowel before its subscript is not
  normalized);
- ``km_invalid_cluster_rate``: invalid Khmer clusters over all Khmer clusters of all outputs
  (:func:`tonsai.text.quality.invalid_cluster_counts`);
- ``km_script_share``: Khmer characters over all letters of all outputs
  (:func:`tonsai.text.script.count_scripts`): 1.0 for pure Khmer, low when the model answers a
  Khmer prompt in Latin script;
- ``km_empty_share``: share of outputs that are empty or whitespace.

A check with nothing to look at (no non-empty output, no Khmer cluster, no letter) is left out of
the scores: reported, it would read as perfect (every empty output is trivially normalized and has
no invalid cluster), where the model wrote nothing.
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
    written = [t for t in outputs if t.strip()]
    out = {"km_empty_share": 1 - len(written) / len(outputs)}
    if written:
        out["km_normalized_share"] = sum(normalize(t) == t for t in written) / len(written)
    if clusters:
        out["km_invalid_cluster_rate"] = invalid / clusters
    if letters:
        out["km_script_share"] = khmer / letters
    return out
