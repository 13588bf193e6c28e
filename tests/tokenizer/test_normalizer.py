from hypothesis import given, settings
from hypothesis import strategies as st

from tonsai.text import normalize
from tonsai.tokenizer.normalizer import khmer_normalizer

from ..conftest import SAMPLE

CHAIN = khmer_normalizer()
khmer = st.lists(st.sampled_from([chr(c) for c in range(0x1780, 0x17FF)] + ["\u200b", "\u200c", "\u200d", " ",
                                                                          "\u00a0", "\r\n", "a"]),
                 max_size=30).map("".join)


@settings(max_examples=500, deadline=None)
@given(khmer)
def test_chain_never_changes_normalized_text(s):
    n = normalize(s)
    assert CHAIN.normalize_str(n) == n


def test_chain_carries_the_character_rules():
    raw = "\ufeffក\u200bខ\u00a0\r\nគ\u17d2\u178a\u17c1\u17b8 \u17a3 ម\u17bb\u17b7"
    assert CHAIN.normalize_str(raw) == normalize(raw)


def test_agreement_on_raw_real_news(shared_data):
    lines = [x for x in (shared_data / "khmer_news_kh_data_1000/khm_news_orig.txt").read_text().splitlines() if x.strip()]
    same = sum(CHAIN.normalize_str(x) == normalize(x) for x in lines)
    assert same / len(lines) >= 0.985  # measured 0.9876; NFC alone gives about a third


def test_autotokenizer_on_raw_text_sees_normalized_text(sample_pipeline):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    raw = (SAMPLE / "km.txt").read_text(encoding="utf-8")  # written with subscript DA, which normalize turns into TA
    assert raw != normalize(raw)
    assert tok(raw, add_special_tokens=False)["input_ids"] == tok(normalize(raw), add_special_tokens=False)["input_ids"]
