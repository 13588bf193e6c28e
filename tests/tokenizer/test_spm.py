import pytest

from tonsai.errors import StageError
from tonsai.text import normalize
from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
from tonsai.tokenizer.spm import to_tokenizers, train_sentencepiece

from ..conftest import SAMPLE

EDGE = ["  two  spaces ", "Ωμέγα 日本語 🙂", "\n\tx", "ប្រទេសកម្ពុជា។ 123", ""]


def sample_lines():
    return [normalize(line) for name in ("km.txt", "en.txt")
            for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines()]


def test_converted_tokenizer_gives_sentencepieces_own_ids():
    sp = train_sentencepiece(sample_lines(), 600, ["<|endoftext|>", "<|pad|>"])
    tok = to_tokenizers(sp)
    texts = sample_lines() + EDGE
    assert [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)] == sp.encode(texts)
    assert all(tok.decode(sp.encode(t)) == t for t in texts)


def test_real_text_ids_match(shared_data):
    km = [normalize(x) for x in (shared_data / "ntrex128_khm_eng_dev/khm_Khmr.txt").read_text().splitlines()]
    en = [normalize(x) for x in (shared_data / "ntrex128_khm_eng_dev/eng_Latn.txt").read_text().splitlines()]
    sp = train_sentencepiece(km[:500] + en[:500], 4000, ["<|endoftext|>", "<|pad|>"])
    tok = to_tokenizers(sp)
    held_out = km[500:] + en[500:]
    assert [e.ids for e in tok.encode_batch(held_out, add_special_tokens=False)] == sp.encode(held_out)


def test_sentencepiece_folder_loads_with_autotokenizer(tmp_path, sample_pipeline):
    from transformers import AutoTokenizer

    out = tmp_path / "spm"
    m = run_train_tokenizer(TokenizerConfig(output_dir=str(out), dataset_dir=str(sample_pipeline / "data"),
                                            vocab_size=600, algorithm="sentencepiece"))
    assert m["algorithm"] == "sentencepiece"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    for text in sample_lines() + EDGE:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_vocabulary_too_small_for_the_characters(tmp_path, sample_pipeline):
    with pytest.raises(StageError, match=r"--vocab-size 300 is too small for SentencePiece on this text: it needs "
                                         r"at least \d+"):
        run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "s"), dataset_dir=str(sample_pipeline / "data"),
                                            vocab_size=300, algorithm="sentencepiece"))
    assert not (tmp_path / "s").exists()
