import json

import pytest

from tonsai.cli import parse_config
from tonsai.data.mix import plan_sources
from tonsai.data.prepared import load_splits
from tonsai.errors import StageError
from tonsai.manifest import file_sha256, read_manifest
from tonsai.text import normalize
from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer, token_dtype

from ..conftest import SAMPLE


@pytest.fixture(scope="module", params=["byte-fallback", "byte-level"])
def trained(request, sample_pipeline, tmp_path_factory):
    if request.param == "byte-fallback":
        return sample_pipeline / "tok"  # the default algorithm
    out = tmp_path_factory.mktemp("bytelevel") / "tok"
    run_train_tokenizer(TokenizerConfig(output_dir=str(out), dataset_dir=str(sample_pipeline / "data"),
                                        vocab_size=512, algorithm=request.param))
    return out


def test_folder_loads_with_autotokenizer_and_round_trips(trained):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained)
    assert tok.eos_token == "<|endoftext|>" and tok.bos_token == "<|endoftext|>"
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    for name in ("km.txt", "en.txt"):
        text = normalize((SAMPLE / name).read_text(encoding="utf-8"))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert tok.unk_token_id is None or tok.unk_token_id not in ids
    # unseen scripts still round-trip through the byte alphabet
    odd = "Ωμέγα 日本語 🙂 ខ្មែរ\n\t  x"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd
    assert read_manifest(trained, "tokenizer")["algorithm"] in ("byte-fallback", "byte-level")


def test_khmer_signs_stay_with_their_consonants(sample_pipeline):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(sample_pipeline / "tok" / "tokenizer.json"))
    pieces = tok.pre_tokenizer.pre_tokenize_str("ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។ Hello, world")
    words = [p for p, _ in pieces]
    # one pre-token for the whole Khmer run (marks are letters) with its khan, English split as usual
    assert words == ["ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។", " Hello", ",", " world"]


def test_manifest_records_hash_dtype_and_specials(sample_pipeline):
    m = read_manifest(sample_pipeline / "tok", "tokenizer")
    assert m["tokenizer_sha256"] == file_sha256(sample_pipeline / "tok" / "tokenizer.json")
    assert m["token_dtype"] == "uint16"
    assert m["vocab_size"] == 512
    assert set(m["special_tokens"]) == {"<|endoftext|>", "<|pad|>"}


def test_khmer_share_sets_the_tokenizers_language_balance(tmp_path, sample_pipeline):
    m = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "t"), dataset_dir=str(sample_pipeline / "data"),
                                            vocab_size=400, khmer_share=0.3))
    assert m["language_balance"]["km"]["share"] == pytest.approx(0.3, abs=0.02)
    with pytest.raises(SystemExit):
        parse_config(TokenizerConfig, "t", ["--input", "x.txt", "--khmer-share", "0.5", "--output-dir", "o"])


def test_max_chars_trains_on_a_seeded_sample_of_the_dataset(tmp_path, sample_pipeline):
    data = sample_pipeline / "data"
    train = load_splits(data / "dataset")["train"]
    all_chars = sum(len(t) for t in train["text"])
    whole = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "all"), dataset_dir=str(data),
                                                vocab_size=400))
    assert whole["trained_on"] == {"documents": len(train), "characters": all_chars}
    assert whole["sampled"] is None  # the default cap is far above this split

    cap = all_chars // 3
    a = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "a"), dataset_dir=str(data), vocab_size=400,
                                            max_chars=cap, seed=1))
    assert abs(a["trained_on"]["characters"] - cap) < max(len(t) for t in train["text"])
    assert a["sampled"]["characters"] == a["trained_on"]["characters"]
    assert a["sampled"]["documents"] == a["trained_on"]["documents"] < len(train)
    b = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "b"), dataset_dir=str(data), vocab_size=400,
                                            max_chars=cap, seed=1))
    assert a["tokenizer_sha256"] == b["tokenizer_sha256"]  # seeded: the same sample, the same vocabulary
    c = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "c"), dataset_dir=str(data), vocab_size=400,
                                            max_chars=cap, seed=2))
    # another seed: the plan the stage draws from (tonsai.data.mix) picks other documents, and the
    # stage trains on exactly that draw
    lengths = [len(t) for t in train["text"]]

    def draw(seed):
        counts, _, _, _ = plan_sources({"all": lengths}, {"all": "all"}, {"all": 1.0}, {"all": 1.0}, seed, cap)
        return counts["all"]

    assert draw(1).tolist() != draw(2).tolist()
    for run, seed in ((a, 1), (c, 2)):
        assert run["sampled"]["documents"] == int(draw(seed).sum())
        assert run["sampled"]["characters"] == int((draw(seed) * lengths).sum())

    # with --khmer-share the cap holds and so does the balance
    d = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "d"), dataset_dir=str(data), vocab_size=400,
                                            khmer_share=0.7, max_chars=cap))
    assert d["language_balance"]["km"]["share"] == pytest.approx(0.7, abs=0.03)
    assert abs(d["trained_on"]["characters"] - cap) < 2 * max(len(t) for t in train["text"])
    # --max-epochs above 1 repeats the scarcer language's documents to reach the balance
    e = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "e"), dataset_dir=str(data), vocab_size=400,
                                            khmer_share=0.8, max_epochs=2.0))
    assert e["language_balance"]["km"]["share"] == pytest.approx(0.8, abs=0.03)
    assert 1.5 < e["language_balance"]["km"]["epochs"] <= 2.0
    km_docs = sum(lang == "km" for lang in train["lang"])
    assert e["sampled"]["documents"] > km_docs
    with pytest.raises(SystemExit):
        parse_config(TokenizerConfig, "t", ["--dataset-dir", "x", "--max-chars", "-1", "--output-dir", "o"])


def test_token_dtype_by_vocab_size():
    assert token_dtype(65535) == "uint16"
    assert token_dtype(65536) == "uint32"


def test_train_from_raw_files(tmp_path):
    out = tmp_path / "tok"
    m = run_train_tokenizer(TokenizerConfig(output_dir=str(out), input=[str(SAMPLE / "km.txt")], vocab_size=400))
    assert m["trained_on"]["documents"] == 51
    assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == "BPE"


def test_vocab_too_small_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_config(TokenizerConfig, "t", ["--input", "x.txt", "--vocab-size", "100", "--output-dir", "o"])
    assert "too small" in capsys.readouterr().err


def test_missing_column_and_empty_input(tmp_path, sample_pipeline):
    with pytest.raises(StageError, match="no column 'body'"):
        run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "a"), dataset_dir=str(sample_pipeline / "data"),
                                            text_column="body", vocab_size=300))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(StageError, match="empty"):
        run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "b"), input=[str(empty)], vocab_size=300))
    assert not (tmp_path / "b").exists()


def test_numbers_keep_their_space_and_separators():
    from tonsai.tokenizer.bpe import build_tokenizer_model

    tok = build_tokenizer_model()
    words = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("In 2019, 1,000.5 came at 12:55. ឆ្នាំ ២០១៩ មាន ១២៣នាក់។")]
    assert words == ["In", " 2019", ",", " 1,000.5", " came", " at", " 12:55", ".", " ឆ្នាំ", " ២០១៩", " មាន",
                     " ១២៣", "នាក់។"]


def test_raw_files_train_on_distinct_lines(tmp_path):
    """A line repeated 200 times (a play's speaker name) buys no merges unless --no-dedup-lines."""
    src = tmp_path / "play.txt"
    body = (SAMPLE / "en.txt").read_text(encoding="utf-8").splitlines() + (SAMPLE / "km.txt").read_text(
        encoding="utf-8").splitlines()
    src.write_text("\n".join(body + ["GLOUCESTER:"] * 200) + "\n", encoding="utf-8")
    got = {}
    for dedup in (True, False):
        out = tmp_path / f"tok{dedup}"
        m = run_train_tokenizer(TokenizerConfig(output_dir=str(out), input=[str(src)], vocab_size=600, dedup_lines=dedup))
        vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
        got[dedup] = m, "GLOUCESTER" in vocab
    (m_on, has_on), (m_off, has_off) = got[True], got[False]
    assert m_on["trained_on"]["documents"] == 103 and m_on["duplicate_lines_skipped"] == 199
    assert m_off["trained_on"]["documents"] == 302 and m_off["duplicate_lines_skipped"] is None
    assert has_off and not has_on
