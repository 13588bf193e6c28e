"""Weighted mixing of languages, measured in characters.

The unit is characters of normalized text (not bytes: a Khmer character is 3 UTF-8 bytes, an
English letter 1; not tokens: they depend on a tokenizer that does not exist yet). With weights
``w_l`` (normalized to sum to 1), available characters ``C_l`` and at most ``max_epochs`` passes
over any language, the mixture's size is the largest total ``T`` that every language can fill:
``T = min_l(C_l * max_epochs / w_l)``. Each language then contributes ``w_l * T`` characters,
taken document by document in a seeded shuffled order (a new order for each extra epoch), stopping
at the document that brings the running total closest to the target.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence


@dataclasses.dataclass
class LanguagePlan:
    lang: str
    weight: float
    available_chars: int
    target_chars: int = 0
    selected_chars: int = 0
    selected_docs: int = 0
    epochs: float = 0.0


def normalize_weights(weights: dict[str, float]) -> dict[str, float]:
    for lang, w in weights.items():
        if w < 0:
            raise ValueError(f"weight for {lang} is {w}; weights must be >= 0")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("all mixing weights are zero; give at least one language a positive weight")
    return {lang: w / total for lang, w in weights.items()}


def select_by_chars(lengths: Sequence[int], target: int, rng: random.Random) -> list[int]:
    """Indices into ``lengths`` (repeats allowed across epochs) whose lengths sum closest to ``target``."""
    chosen: list[int] = []
    total = 0
    if not lengths or target <= 0:
        return chosen
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        for i in order:
            if total >= target:
                return chosen
            n = lengths[i]
            # stop before a document that would overshoot by more than stopping short would miss
            if total + n > target and (total + n - target) > (target - total):
                return chosen
            chosen.append(i)
            total += n


def plan_mixture(chars: dict[str, list[int]], weights: dict[str, float], max_epochs: float,
                 seed: int) -> tuple[dict[str, list[int]], dict[str, LanguagePlan]]:
    """Choose documents per language so that character shares match ``weights``.

    ``chars[lang]`` lists the character count of each candidate document. Returns the chosen
    indices per language and a plan with the figures for the manifest.
    """
    w = normalize_weights(weights)
    plans = {lang: LanguagePlan(lang, w[lang], sum(chars.get(lang, []))) for lang in w}
    active = [lang for lang in w if w[lang] > 0]
    for lang in active:
        if plans[lang].available_chars == 0:
            raise ValueError(f"language {lang} has weight {weights[lang]} but no documents left after filtering")
    total = min(plans[lang].available_chars * max_epochs / w[lang] for lang in active)
    chosen: dict[str, list[int]] = {}
    for lang in w:
        plan = plans[lang]
        plan.target_chars = round(w[lang] * total)
        idx = select_by_chars(chars.get(lang, []), plan.target_chars, random.Random(f"{seed}:{lang}"))
        chosen[lang] = idx
        plan.selected_docs = len(idx)
        plan.selected_chars = sum(chars[lang][i] for i in idx) if idx else 0
        plan.epochs = plan.selected_chars / plan.available_chars if plan.available_chars else 0.0
    return chosen, plans
