import numpy as np
import pytest

from tonsai.data.prepared import load_splits
from tonsai.errors import StageError
from tonsai.tokenizer.pack import PackedBlocks, TokenFile, pack_dataset_split, pack_texts, tokenizer_hash

from ..conftest import SAMPLE


def test_pack_writes_eos_separated_tokens_and_checks_tokenizer(tmp_path, sample_pipeline):
    from transformers import AutoTokenizer

    tok_dir = sample_pipeline / "tok"
    tok = AutoTokenizer.from_pretrained(tok_dir)
    texts = ["ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។", "Hello world.", "ភ្នំពេញ"]
    meta = pack_texts(texts, tok_dir, tmp_path / "tokens")
    tf = TokenFile(tmp_path / "tokens", tokenizer_hash(tok_dir))
    ids = np.asarray(tf.tokens).tolist()
    expected = []
    for t in texts:
        expected += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ids == expected
    assert meta["dtype"] == "uint16" and meta["documents"] == 3
    assert meta["bytes"] == sum(len(t.encode()) for t in texts)
    with pytest.raises(StageError, match="another tokenizer"):
        TokenFile(tmp_path / "tokens", "0" * 64)
    with pytest.raises(StageError, match="needs uint32"):
        TokenFile(tmp_path / "tokens", expect_dtype="uint32")


def test_literal_end_of_text_in_a_document_is_text_not_the_separator(tmp_path, sample_pipeline):
    """A document that quotes "<|endoftext|>" must not cut itself in two in the token stream."""
    from tokenizers import Tokenizer

    tok_dir = sample_pipeline / "tok"
    texts = ["Write <|endoftext|> to end a document.", "ភ្នំពេញ"]
    meta = pack_texts(texts, tok_dir, tmp_path / "tokens")
    ids = np.asarray(TokenFile(tmp_path / "tokens").tokens).tolist()
    eos = meta["eos_id"]
    assert ids.count(eos) == 2 and ids[-1] == eos  # one separator per document, none inside
    first = ids[:ids.index(eos)]
    assert Tokenizer.from_file(str(tok_dir / "tokenizer.json")).decode(first) == texts[0]


def test_truncated_token_file_is_refused(tmp_path, sample_pipeline):
    pack_texts(["Hello world, hello world."] * 5, sample_pipeline / "tok", tmp_path / "t")
    path = tmp_path / "t" / "shard-00000.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(StageError, match="re-tokenize"):
        TokenFile(tmp_path / "t")


def test_packed_blocks():
    tokens = np.arange(10, dtype=np.uint16)
    train = PackedBlocks(tokens, 4)
    assert len(train) == 2
    assert train[1]["input_ids"].tolist() == [4, 5, 6, 7]
    assert train[0]["labels"].tolist() == [0, 1, 2, 3]  # the model shifts labels itself
    with pytest.raises(IndexError):
        train[2]  # the tail [8, 9] is shorter than a block: not used


def test_sharded_tokens_slices_across_shards():
    from tonsai.tokenizer.pack import ShardedTokens

    arrays = [np.arange(0, 3, dtype=np.uint16), np.zeros(0, np.uint16), np.arange(3, 10, dtype=np.uint16)]
    t = ShardedTokens(arrays, np.dtype(np.uint16))
    assert len(t) == 10
    assert t[2:5].tolist() == [2, 3, 4]
    assert t[0:10].tolist() == list(range(10))
    assert t[8:20].tolist() == [8, 9]
    assert np.asarray(t).tolist() == list(range(10))


def test_several_processes_give_the_same_tokens_as_one(tmp_path, sample_pipeline):
    from tonsai.manifest import read_manifest
    from tonsai.tokenizer.pack import TokenizeConfig, run_tokenize

    one = run_tokenize(TokenizeConfig(str(sample_pipeline / "data"), str(sample_pipeline / "tok"), str(tmp_path / "a"), 1))
    three = run_tokenize(TokenizeConfig(str(sample_pipeline / "data"), str(sample_pipeline / "tok"), str(tmp_path / "b"), 3))
    assert set(one) == {"train", "validation_km", "validation_en"}
    a, b = TokenFile(one["train"]), TokenFile(three["train"])
    assert len(b.meta["shards"]) == 3 and len(a.meta["shards"]) == 1
    assert np.asarray(a.tokens).tolist() == np.asarray(b.tokens).tolist()
    m = read_manifest(tmp_path / "b", "tokens")
    assert m["tokenizer_sha256"] == tokenizer_hash(sample_pipeline / "tok")
    assert m["folders"]["validation_km"]["lang"] == "km"


@pytest.mark.parametrize("procs", [1, 2])
def test_mixed_split_records_the_language_of_every_token(sample_pipeline, tmp_path, procs):
    from transformers import AutoTokenizer

    out = tmp_path / "train"
    pack_dataset_split(sample_pipeline / "data", "train", None, sample_pipeline / "tok", out, procs)
    tf = TokenFile(out)
    assert sorted(tf.langs) == ["en", "km"]
    total = tf.lang_counts(0, len(tf))
    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    want = {"km": 0, "en": 0}
    ds = load_splits(sample_pipeline / "data" / "dataset")["train"]
    for text, lang in zip(ds["text"], ds["lang"]):
        want[lang] += len(tok(text, add_special_tokens=False)["input_ids"]) + 1  # + its end-of-text
    assert {lang: int(n) for lang, n in zip(tf.langs, total)} == want
    assert tf.lang_counts(100, 300).sum() == 200
    blocks = PackedBlocks(tf.tokens, 64, token_file=tf)
    assert sum(int(blocks[i]["lang_tokens"].sum()) for i in range(len(blocks))) == len(blocks) * 64


def test_pack_dataset_states_token_shares_and_reuses_only_matching_folders(sample_pipeline, tmp_path, caplog):
    import json
    import logging
    import shutil

    from tonsai.tokenizer.pack import pack_dataset

    data = tmp_path / "data"
    shutil.copytree(sample_pipeline / "data", data)
    out = tmp_path / "tokens"
    paths = pack_dataset(data, sample_pipeline / "tok", out)
    assert sorted(paths) == ["train", "validation_en", "validation_km"]
    manifest = json.loads((out / "manifest.json").read_text())
    tf = TokenFile(paths["train"])
    counts = dict(zip(tf.langs, tf.lang_counts(0, len(tf)).tolist()))
    shares = manifest["train_token_shares"]
    assert sorted(shares) == ["en", "km"]
    for lang, n in counts.items():
        assert shares[lang]["token_share"] == pytest.approx(n / len(tf), abs=1e-4)
    by_lang = _train_texts_by_lang(data)
    chars = {lang: sum(len(t) for t in texts) for lang, texts in by_lang.items()}
    assert shares["km"]["character_share"] == pytest.approx(chars["km"] / sum(chars.values()), abs=1e-4)
    for lang in ("km", "en"):  # text tokens per character: the end-of-text after each document not counted
        want = (counts[lang] - len(by_lang[lang])) / chars[lang]
        assert shares[lang]["tokens_per_character"] == pytest.approx(want, abs=1e-4)

    with caplog.at_level(logging.INFO, logger="tonsai.tokenizer.pack"):
        pack_dataset(data, sample_pipeline / "tok", out)
    assert caplog.text.count("reusing token folder") == 3
    # prepare rerun (its manifest changes): nothing is reused
    m = json.loads((data / "manifest.json").read_text())
    m["created_utc"] = "2000-01-01T00:00:00+00:00"
    (data / "manifest.json").write_text(json.dumps(m))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tonsai.tokenizer.pack"):
        pack_dataset(data, sample_pipeline / "tok", out)
    assert "reusing token folder" not in caplog.text
    assert caplog.text.count("another preparation") == 3


def _train_texts_by_lang(dataset_dir):
    ds = load_splits(dataset_dir / "dataset")["train"]
    out = {}
    for text, lang in zip(ds["text"], ds["lang"]):
        out.setdefault(lang, []).append(text)
    return out


def test_normalized_text_skips_the_tokenizers_chain_with_the_same_ids(tmp_path, sample_pipeline):
    """The tokenize stage encodes a prepared dataset's (normalized) text without tokenizer.json's
    normalizer chain: the ids are those AutoTokenizer gives, on normalized text as on the raw text."""
    from transformers import AutoTokenizer

    from tonsai.text import normalize
    from tonsai.tokenizer.shards import write_shard

    tok_json = str(sample_pipeline / "tok" / "tokenizer.json")
    raw = (SAMPLE / "km.txt").read_text(encoding="utf-8").splitlines()[:20]  # subscript DA, which normalize changes
    texts = [normalize(t) for t in raw]
    assert raw != texts
    write_shard(texts, tok_json, tmp_path / "fast.bin", normalized=True)
    write_shard(texts, tok_json, tmp_path / "chain.bin")
    assert (tmp_path / "fast.bin").read_bytes() == (tmp_path / "chain.bin").read_bytes()
    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    expected = [i for t in raw for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert np.fromfile(tmp_path / "fast.bin", dtype=np.uint16).tolist() == expected
    write_shard(raw, tok_json, tmp_path / "raw.bin", normalized=True)  # the chain really is skipped
    assert (tmp_path / "raw.bin").read_bytes() != (tmp_path / "chain.bin").read_bytes()
