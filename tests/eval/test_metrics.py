from pathlib import Path

import pytest
import sacrebleu

from tonsai.eval import metrics
from tonsai.eval.khmer_checks import khmer_output_checks


def test_exact_match_squad_normalization():
    assert metrics.exact_match(["The cat!"], ["cat"]) == 1.0
    assert metrics.exact_match(["a dog", "Phnom Penh."], ["the cat", "phnom penh"]) == 0.5
    # Khmer punctuation and spacing do not count; the best of several references does
    assert metrics.exact_match(["ភ្នំពេញ។"], [["ក្រុងភ្នំពេញ", "ភ្នំពេញ"]]) == 1.0
    assert metrics.exact_match(["ប្រាក់ រៀល"], ["ប្រាក់រៀល"]) == 1.0
    assert metrics.exact_match(["រៀល"], ["ប្រាក់រៀល"]) == 0.0


def test_f1_english_by_hand():
    # tokens after normalization: [big, red, cat] vs [red, cat, sat]: 2 common, P = R = 2/3
    assert metrics.f1(["the big red cat"], ["a red cat sat"]) == pytest.approx(2 / 3)
    assert metrics.f1(["nothing"], ["else"]) == 0.0


def test_f1_khmer_counts_segmented_words_not_whitespace():
    pred, ref = "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា", "ខ្ញុំរស់នៅប្រទេសកម្ពុជា"
    assert metrics.tokens_for(pred, "km") == ["ខ្ញុំ", "ស្រឡាញ់", "ប្រទេស", "កម្ពុជា"]
    assert metrics.tokens_for(ref, "km") == ["ខ្ញុំ", "រស់", "នៅ", "ប្រទេស", "កម្ពុជា"]
    # 3 common words, P = 3/4, R = 3/5 (whitespace tokens would give 0: one token each, different)
    assert metrics.f1([pred], [ref], lang="km") == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_lcs_and_rouge_l_on_khmer_by_hand():
    assert metrics.lcs_length("abcbdab", "bdcaba") == 4
    assert metrics.lcs_length([], ["a"]) == 0
    pred, ref = "កសិករដាំស្រូវនៅរដូវវស្សា។", "កសិករច្រូតស្រូវនៅខែធ្នូ។"
    # words: [កសិករ ដាំ ស្រូវ នៅ រដូវ វស្សា] vs [កសិករ ច្រូត ស្រូវ នៅ ខែធ្នូ]; LCS = កសិករ ស្រូវ នៅ = 3
    assert metrics.rouge_l([pred], [ref], lang="km") == pytest.approx(2 * (3 / 6) * (3 / 5) / (3 / 6 + 3 / 5))
    assert metrics.rouge_l([ref, pred], [ref, "English only"], lang="km") == pytest.approx(0.5)


def test_chrf_and_bleu_equal_sacrebleu():
    preds = ["The Mekong flows south.", "Farmers plant rice."]
    refs = ["The Mekong River flows from north to south.", "Farmers plant rice in the rainy season."]
    assert metrics.chrf(preds, refs) == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    assert metrics.chrf(preds, refs, word_order=2) == pytest.approx(
        sacrebleu.corpus_chrf(preds, [refs], word_order=2).score)
    assert metrics.chrf(preds, refs, word_order=2) != pytest.approx(metrics.chrf(preds, refs))
    assert metrics.bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert metrics.chrf(refs, refs) == pytest.approx(100.0)


def test_khmer_bleu_is_over_words():
    ref = "កសិករដាំស្រូវនៅរដូវវស្សា។"
    assert metrics.bleu([ref], [ref], lang="km") == pytest.approx(100.0)
    pred = "កសិករដាំស្រូវនៅខែធ្នូ។"
    seg = lambda t: " ".join(metrics.khmer_words(t))  # noqa: E731
    expected = sacrebleu.corpus_bleu([seg(pred)], [[seg(ref)]], tokenize="none").score
    assert metrics.bleu([pred], [ref], lang="km") == pytest.approx(expected)
    # without segmentation the Khmer sentence is one token and BLEU would be 0
    assert sacrebleu.corpus_bleu([pred], [[ref]]).score == 0.0 < expected


def test_choice_scores_acc_and_byte_normalized_acc():
    # item 1: choice 0 has the higher total but the lower per-byte log-likelihood
    lls = [[-4.0, -6.0], [-1.0, -3.0]]
    choices = [["ab", "abcdefgh"], ["x", "y"]]
    scores, pred, pred_norm = metrics.choice_scores(lls, choices, [1, 0])
    assert pred == [0, 0] and pred_norm == [1, 0]
    assert scores == {"acc": 0.5, "acc_norm": 1.0}


def test_generation_scores_rejects_unknown_metric():
    with pytest.raises(ValueError, match="unknown generation metric 'meteor'"):
        metrics.generation_scores(["meteor"], ["a"], ["a"], "en")
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metrics.exact_match(["a", "b"], ["a"])


def test_khmer_output_checks():
    good = "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។"
    not_normalized = "ខ្ញុំ\u200bទៅ"          # a zero-width space: normalize removes it
    invalid = "ក\u17b6\u17b6"                  # a vowel sign twice on one consonant
    latin = "hello"
    checks = khmer_output_checks([good, not_normalized, invalid, latin, " "])
    assert checks["km_normalized_share"] == pytest.approx(3 / 4)  # of the four non-empty outputs
    assert checks["km_empty_share"] == pytest.approx(1 / 5)
    assert 0 < checks["km_invalid_cluster_rate"] < 0.2
    assert khmer_output_checks([good])["km_invalid_cluster_rate"] == 0.0
    assert khmer_output_checks([good])["km_script_share"] == 1.0
    assert khmer_output_checks([latin])["km_script_share"] == 0.0
    assert "km_invalid_cluster_rate" not in khmer_output_checks([latin])  # no Khmer cluster to judge
    assert 0.5 < checks["km_script_share"] < 1.0
    # a model that wrote nothing: only the empty share, nothing that reads as perfect
    assert khmer_output_checks(["", " ", "\n"]) == {"km_empty_share": 1.0}


MODULES = Path(metrics.__file__).parent / "metric_modules"


@pytest.mark.parametrize("name, kwargs, expected", [
    ("tonsai_chrf", {"word_order": 2}, lambda p, r: {"score": metrics.chrf(p, r, word_order=2), "word_order": 2}),
    ("tonsai_bleu", {"lang": "km"}, lambda p, r: {"bleu": metrics.bleu(p, r, lang="km")}),
    ("tonsai_rouge_l", {"lang": "km"}, lambda p, r: {"rouge_l": metrics.rouge_l(p, r, lang="km")}),
    ("tonsai_qa", {"lang": "km"}, lambda p, r: {"exact_match": metrics.exact_match(p, r),
                                                "f1": metrics.f1(p, r, lang="km")}),
])
def test_metric_modules_load_offline_by_path(name, kwargs, expected):
    import os

    import evaluate

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by tests/conftest.py: no Hub access
    preds = ["កសិករដាំស្រូវនៅរដូវវស្សា។", "ភ្នំពេញ"]
    refs = [["កសិករច្រូតស្រូវនៅខែធ្នូ។"], ["ក្រុងភ្នំពេញ", "ភ្នំពេញ"]]
    got = evaluate.load(str(MODULES / name)).compute(predictions=preds, references=refs, **kwargs)
    want = expected(preds, refs)
    assert got == pytest.approx(want)
    assert 0 < list(want.values())[0] < 100
