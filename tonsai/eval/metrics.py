"""Scores of prompt-suite tasks, computed on normalized text (tonsai.text.normalize).

Scales follow the usual reports: chrF, chrF++ and BLEU are sacrebleu corpus scores on 0-100;
exact match, F1, ROUGE-L and accuracy are on 0-1.

- ``chrf`` / ``chrf_pp``: sacrebleu ``corpus_chrf`` (character 6-grams, beta 2; chrF++ adds word
  1-2-grams, which sacrebleu takes at whitespace).
- ``bleu``: sacrebleu ``corpus_bleu``. English uses sacrebleu's ``13a`` tokenizer; Khmer, which writes
  no spaces between words, is first segmented into words with khmer-nltk
  (:func:`tonsai.text.segment.words`) and scored with ``tokenize="none"`` (BLEU over Khmer words).
- ``rouge_l``: mean over examples of the LCS F-measure (beta 1) between word sequences: Khmer words
  from khmer-nltk, English words lowercased and split at non-word characters. (rouge-score's default
  tokenizer drops non-ASCII characters, which would make every Khmer score 0.)
- ``exact_match`` / ``f1``: SQuAD-style. Answers are lowercased, stripped of punctuation (Khmer
  punctuation too), English articles and extra whitespace; F1 is over a bag of words (Khmer words
  from the segmenter, not whitespace). With several references the best one counts.
- ``acc`` / ``acc_norm``: multiple choice accuracy on the summed log-likelihood of each choice, and on
  the log-likelihood divided by the choice's UTF-8 bytes (lm-evaluation-harness divides by characters
  for its ``acc_norm``; both agree when every choice is in one script).
"""

from __future__ import annotations

import collections
import re
from typing import Sequence

import sacrebleu

from tonsai.text.khmer import KHMER_CHAR
from tonsai.text.segment import words

# datasets (0.7 s to import on a 2-core machine) is imported inside evaluate_features only, which the
# `evaluate` metric modules call: prompt suites (eval_model.py and its --help) score without it.

GENERATION_METRICS = ("chrf", "chrf_pp", "bleu", "rouge_l", "exact_match", "f1")
CHOICE_METRICS = ("acc", "acc_norm")

_PUNCT = re.compile(r"[\u0021-\u002f\u003a-\u0040\u005b-\u0060\u007b-\u007e\u00a1-\u00bf\u2010-\u2027\u2030-\u205e"
                    r"\u3000-\u303f\u17d4-\u17da\u17dc\u19e0-\u19ff]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_EN_WORD = re.compile(r"\w+", re.UNICODE)


def _refs(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def _check(predictions: Sequence[str], references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def _sacrebleu_refs(refs: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference position; pad shorter lists with their first reference."""
    n = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else r[0] for r in refs] for i in range(n)]


def chrf(predictions: Sequence[str], references: Sequence[str | Sequence[str]], word_order: int = 0) -> float:
    """sacrebleu corpus chrF (``word_order=0``) or chrF++ (``word_order=2``), 0-100."""
    _check(predictions, references)
    return sacrebleu.corpus_chrf(list(predictions), _sacrebleu_refs(_refs(references)),
                                 word_order=word_order).score


def khmer_words(text: str) -> list[str]:
    """Non-whitespace words of ``text`` (Khmer through khmer-nltk, other text at whitespace)."""
    return [w for w in words(text) if not w.isspace()]


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str = "en") -> float:
    """sacrebleu corpus BLEU, 0-100; ``lang="km"`` scores over khmer-nltk words (see the module docstring)."""
    _check(predictions, references)
    refs = _refs(references)
    if lang == "km":
        seg = lambda t: " ".join(khmer_words(t))  # noqa: E731
        preds = [seg(p) for p in predictions]
        refs = [[seg(r) for r in rs] for rs in refs]
        return sacrebleu.corpus_bleu(preds, _sacrebleu_refs(refs), tokenize="none").score
    return sacrebleu.corpus_bleu(list(predictions), _sacrebleu_refs(refs), tokenize="13a").score


def tokens_for(text: str, lang: str) -> list[str]:
    """Word tokens for ROUGE-L and F1: khmer-nltk words for Khmer text, lowercased \\w+ runs otherwise."""
    if lang == "km" or KHMER_CHAR.search(text):
        return [w.lower() for w in khmer_words(text) if not _PUNCT.fullmatch(w)]
    return _EN_WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_pair(prediction: str, reference: str, lang: str = "en") -> float:
    """ROUGE-L F-measure (beta 1) of one prediction against one reference."""
    p, r = tokens_for(prediction, lang), tokens_for(reference, lang)
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str = "en") -> float:
    """Mean ROUGE-L F-measure over examples, 0-1 (the best reference per example)."""
    _check(predictions, references)
    return sum(max(rouge_l_pair(p, r, lang) for r in rs)
               for p, rs in zip(predictions, _refs(references))) / len(predictions)


def normalize_answer(text: str) -> str:
    """SQuAD answer normalization extended to Khmer punctuation: lowercase, no punctuation, no English
    articles, single spaces."""
    text = _PUNCT.sub(" ", text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_pair(prediction: str, reference: str) -> float:
    # Khmer may differ only in where spaces fall: compare without spaces when either side is Khmer
    p, r = normalize_answer(prediction), normalize_answer(reference)
    if KHMER_CHAR.search(p) or KHMER_CHAR.search(r):
        p, r = p.replace(" ", ""), r.replace(" ", "")
    return float(p == r)


def f1_pair(prediction: str, reference: str, lang: str = "en") -> float:
    """SQuAD token F1 over a bag of words (Khmer words from the segmenter)."""
    p = tokens_for(normalize_answer(prediction), lang)
    r = tokens_for(normalize_answer(reference), lang)
    if not p or not r:
        return float(p == r)
    common = sum((collections.Counter(p) & collections.Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    _check(predictions, references)
    return sum(max(exact_match_pair(p, r) for r in rs)
               for p, rs in zip(predictions, _refs(references))) / len(predictions)


def f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]], lang: str = "en") -> float:
    _check(predictions, references)
    return sum(max(f1_pair(p, r, lang) for r in rs)
               for p, rs in zip(predictions, _refs(references))) / len(predictions)


def generation_scores(names: Sequence[str], predictions: Sequence[str],
                      references: Sequence[str | Sequence[str]], lang: str) -> dict[str, float]:
    """The named generation metrics (see :data:`GENERATION_METRICS`) of one task."""
    out: dict[str, float] = {}
    for name in names:
        if name == "chrf":
            out[name] = chrf(predictions, references)
        elif name == "chrf_pp":
            out[name] = chrf(predictions, references, word_order=2)
        elif name == "bleu":
            out[name] = bleu(predictions, references, lang)
        elif name == "rouge_l":
            out[name] = rouge_l(predictions, references, lang)
        elif name == "exact_match":
            out[name] = exact_match(predictions, references)
        elif name == "f1":
            out[name] = f1(predictions, references, lang)
        else:
            raise ValueError(f"unknown generation metric {name!r}; known: {', '.join(GENERATION_METRICS)}")
    return out


def choice_scores(loglikelihoods: Sequence[Sequence[float]], choices: Sequence[Sequence[str]],
                  answers: Sequence[int]) -> tuple[dict[str, float], list[int], list[int]]:
    """(``{"acc", "acc_norm"}``, predicted index per item, byte-normalized predicted index per item)."""
    if not answers:
        raise ValueError("no items to score")
    pred, pred_norm = [], []
    for ll, ch in zip(loglikelihoods, choices):
        pred.append(max(range(len(ll)), key=lambda i: ll[i]))
        pred_norm.append(max(range(len(ll)), key=lambda i: ll[i] / max(1, len(ch[i].encode("utf-8")))))
    n = len(answers)
    return ({"acc": sum(p == a for p, a in zip(pred, answers)) / n,
             "acc_norm": sum(p == a for p, a in zip(pred_norm, answers)) / n}, pred, pred_norm)


def evaluate_features() -> list:
    """Inputs of tonsai's `evaluate` metric modules: a prediction string and one reference string or a
    list of accepted references."""
    import datasets

    text = datasets.Value("string")
    return [datasets.Features({"predictions": text, "references": datasets.Sequence(text)}),
            datasets.Features({"predictions": text, "references": text})]
