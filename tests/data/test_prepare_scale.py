"""The streaming prepare stage: input formats, filters, deduplication, mixing options, sharding,
resuming and bad input. Small generated corpora; the shared data only for the mix-file share test."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tonsai.errors import StageError
from tonsai.data.dedup import NearDuplicateClusters, band_keys, exact_duplicates, exact_key
from tonsai.data.filters import FilterThresholds, first_reason, repeated_lines, repeated_ngrams, units
from tonsai.data.mix import plan_sources, source_shares, unimax_budgets
from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.data.prepared import load_prepared
from tonsai.data.sources import ReadStats, Source, iter_documents
from tonsai.text import RoutingThresholds, count_scripts

REPO = Path(__file__).resolve().parents[2]
KM_WORDS = ["ប្រទេស", "កម្ពុជា", "ទន្លេ", "មេគង្គ", "ប្រាសាទ", "អង្គរវត្ត", "កសិករ", "ស្រូវ", "សិស្ស", "សាលារៀន",
            "ភ្នំពេញ", "ខេត្ត", "សៀមរាប", "ភ្លៀង", "រដូវ", "វស្សា", "ថ្ងៃ", "ច័ន្ទ", "ភាសា", "ខ្មែរ"]
EN_WORDS = ["river", "temple", "farmer", "rice", "school", "student", "city", "province", "rain", "season",
            "capital", "kingdom", "market", "village", "water", "forest", "mountain", "road", "bridge", "boat"]


def make_docs(words, n, seed, sep=" "):
    """``n`` distinct pseudo-sentences (distinct enough not to be near-duplicates)."""
    rng = np.random.default_rng(seed)
    return [sep.join(rng.choice(words, size=int(rng.integers(12, 30)))) + ("។" if sep == "" else ".")
            for _ in range(n)]


def km_docs(n, seed=0):
    return make_docs(KM_WORDS, n, seed, sep="")


def en_docs(n, seed=1):
    return make_docs(EN_WORDS, n, seed)


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def cfg(tmp_path, **kw):
    kw.setdefault("output_dir", str(tmp_path / "out"))
    kw.setdefault("min_validation_docs", 1)
    return PrepareConfig(**kw)


# --- sources -------------------------------------------------------------------------------------

def test_every_input_format_yields_the_same_documents(tmp_path):
    import datasets

    texts = en_docs(7)
    records = [{"text": t, "url": f"u{i}"} for i, t in enumerate(texts)]
    jsonl = "".join(json.dumps(r) + "\n" for r in records).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(jsonl))
    import zstandard

    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl))
    (tmp_path / "c.json").write_text(json.dumps(records), encoding="utf-8")
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(("\n".join(texts) + "\n").encode()))
    pq.write_table(pa.table({"text": texts, "n": list(range(7))}), tmp_path / "e.parquet")
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "f_saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts})}).save_to_disk(str(tmp_path / "g_dict"))
    hub = tmp_path / "hub_folder"
    hub.mkdir()
    pq.write_table(pa.table({"text": texts}), hub / "train-00000.parquet")
    for path in ["a.jsonl.gz", "b.jsonl.zst", "c.json", "d.txt.gz", "e.parquet", "f_saved", "g_dict",
                 f"hf:{hub}"]:
        full = path if path.startswith("hf:") else str(tmp_path / path)
        got = [d.text for d in iter_documents(Source(full, "en"), ReadStats())]
        assert got == texts, path
    # a folder holding all of them (the hub folder's parquet too): every input once, the saved
    # datasets' own files and splits not again
    folder_docs = list(iter_documents(Source(str(tmp_path), "en"), ReadStats()))
    assert len(folder_docs) == 7 * 8
    assert len({d.id for d in folder_docs}) == len(folder_docs)


def test_hub_source_streams_through_load_dataset(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    pq.write_table(pa.table({"content": en_docs(30)}), hub / "train-00000.parquet")
    m = run_prepare(cfg(tmp_path, english=[f"hf:{hub}"], text_column="content"))
    assert m["counts"]["en:hub"]["read"] == 30
    assert m["inputs"][0]["hub"] == str(hub) and m["inputs"][0]["split"] == "train"
    assert m["inputs"][0]["files"][0]["sha256"]
    with pytest.raises(StageError, match=r"no 'text' column \(found \['content'\]\)"):
        run_prepare(cfg(tmp_path, english=[f"hf:{hub}"], overwrite=True))


def test_paragraph_mode_makes_one_document_per_blank_line_separated_block(tmp_path):
    paras = [km_docs(3, seed=i) for i in range(12)]  # 12 paragraphs of 3 lines each
    path = tmp_path / "km.txt"
    path.write_text("\n\n".join("\n".join(p) for p in paras) + "\n\n\n", encoding="utf-8")
    m = run_prepare(cfg(tmp_path, khmer=[str(path)], doc_mode="paragraph"))
    assert m["counts"]["km:km.txt"]["read"] == 12
    dd, _ = load_prepared(tmp_path / "out")
    texts = set(dd["train"]["text"]) | set(dd["validation"]["text"])
    c = m["counts"]["km:km.txt"]
    # lines of a paragraph stay together, newlines kept (a filter may drop one of these random paragraphs)
    assert texts <= {"\n".join(p) for p in paras} and len(texts) == c["kept"] >= 10
    line = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "lines"), khmer=[str(path)]))
    assert line["counts"]["km:km.txt"]["read"] == 36


@pytest.mark.parametrize("spec, want", [
    ("hf:HuggingFaceFW/fineweb-2", ("HuggingFaceFW/fineweb-2", None, "train")),
    ("hf:HuggingFaceFW/fineweb-2:khm_Khmr", ("HuggingFaceFW/fineweb-2", "khm_Khmr", "train")),
    ("hf:HuggingFaceFW/fineweb-2:khm_Khmr:test", ("HuggingFaceFW/fineweb-2", "khm_Khmr", "test")),
    ("hf:wikitext::validation", ("wikitext", None, "validation")),
])
def test_hub_spec_parsing(spec, want):
    assert Source(spec, "km").hub_args() == want


def test_hub_revision_pins_the_stream_and_is_recorded(tmp_path, monkeypatch):
    import datasets

    from tonsai.data.sources import load_mix_file, open_hub

    mix = tmp_path / "mix.yaml"
    mix.write_text("sources:\n  - {path: 'hf:HuggingFaceFW/fineweb-2:khm_Khmr', lang: km, revision: abc123}\n")
    (src,) = load_mix_file(mix)
    assert src.revision == "abc123" and src.hub_args() == ("HuggingFaceFW/fineweb-2", "khm_Khmr", "train")
    seen = {}

    def offline(*args, **kwargs):  # no network here: record what would be asked of the Hub
        seen.update(kwargs, args=args)
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(StageError, match="cannot stream this dataset"):
        open_hub(src)
    assert seen["revision"] == "abc123" and seen["streaming"] is True and seen["split"] == "train"
    mix.write_text("sources:\n  - {path: km.txt, lang: km, revision: abc123}\n")
    with pytest.raises(StageError, match="revision applies to hf: sources only"):
        load_mix_file(mix)


@pytest.mark.parametrize("spec", ["hf:", "hf:a:b:c:d"])
def test_bad_hub_spec_says_the_form(spec):
    with pytest.raises(StageError, match=r"expected hf:NAME\[:CONFIG\[:SPLIT\]\]"):
        Source(spec, "km").hub_args()


def test_missing_parquet_column_lists_columns(tmp_path):
    pq.write_table(pa.table({"body": ["x"], "url": ["y"]}), tmp_path / "a.parquet")
    with pytest.raises(StageError, match=r"a.parquet: no 'text' column \(found \['body', 'url'\]\)"):
        run_prepare(cfg(tmp_path, english=[str(tmp_path / "a.parquet")]))
    assert not (tmp_path / "out").exists()


def test_malformed_json_lines_can_be_skipped_and_counted(tmp_path):
    p = tmp_path / "en.jsonl"
    lines = [json.dumps({"text": t}) for t in en_docs(10)]
    lines.insert(3, "{broken")
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    m = run_prepare(cfg(tmp_path, english=[str(p)], bad_records="skip"))
    c = m["counts"]["en:en.jsonl"]
    assert c["read"] == 11 and c["dropped:malformed_json"] == 1 and c["malformed_records"] == 1
    assert m["skipped_record_locations"]["en:en.jsonl"] == {"malformed_json": [f"{p}:4"]}


def test_invalid_utf8_skip_drops_the_document(tmp_path):
    p = tmp_path / "en.txt"
    docs = en_docs(6)
    p.write_bytes(b"\n".join(d.encode() for d in docs[:3]) + b"\n" + docs[3].encode() + b"\xff\n"
                  + b"\n".join(d.encode() for d in docs[4:]) + b"\n")
    m = run_prepare(cfg(tmp_path, english=[str(p)], invalid_utf8="skip"))
    c = m["counts"]["en:en.txt"]
    assert c["dropped:invalid_utf8"] == 1 and c["invalid_utf8_lines"] == 1 and c["kept"] == 5


def test_unreadable_file_is_a_clear_error(tmp_path):
    p = tmp_path / "en.txt.gz"
    p.write_bytes(b"this is not gzip at all")
    with pytest.raises(StageError, match=r"en.txt.gz: cannot read"):
        run_prepare(cfg(tmp_path, english=[str(p)]))
    assert not (tmp_path / "out").exists()


# --- filters -------------------------------------------------------------------------------------

def test_word_units_count_khmer_syllables():
    assert units("ប្រទេសកម្ពុជា is here") == ["ប្រ", "ទេ", "ស", "ក", "ម្ពុ", "ជា", "is", "here"]


def test_repetition_and_ratio_filters_give_reasons():
    t = FilterThresholds()
    routing = RoutingThresholds()

    def reason(text, lang="en"):
        return first_reason(text, count_scripts(text), lang, routing, t)

    assert reason("\n".join(["same line here ok"] * 4 + ["another line"])) == "repeated_lines"
    assert reason(" ".join(["buy cheap watches now today"] * 6)) == "repeated_ngrams"
    assert reason("ទិញនាឡិកាថោកនៅថ្ងៃនេះ" * 10, "km") == "repeated_ngrams"
    assert reason("Call 012 345 678 or 098 765 432 or 011 222 333 now") == "too_many_digits"
    assert reason("Hello ::: ### *** !!! ??? ... --- +++ === world") == "too_many_symbols"
    assert reason("see https://example.com/a/very/long/path/to/some/page/index.html ok") == "too_many_urls"
    assert reason(en_docs(1)[0]) is None
    assert reason(km_docs(1)[0], "km") is None
    assert repeated_lines("a\nb\nc", 0.3) is None
    assert repeated_ngrams(units(km_docs(1)[0]), 0.3) is None


# --- deduplication -------------------------------------------------------------------------------

def test_exact_and_near_duplicates_keep_the_earliest():
    h = np.array([exact_key(t) for t in ["a", "b", "a", "c", "b"]], dtype=np.uint64)
    order = np.array([5, 1, 0, 3, 4])
    dup = exact_duplicates(h[:, 0], h[:, 1], order)
    assert dup.tolist() == [True, False, False, False, True]  # "a" survives at order 0, "b" at order 1
    base = en_docs(1)[0] * 3
    texts = [base.replace("river", "rivers", 1), base, en_docs(1, seed=9)[0]]
    bands = np.array([band_keys(t) for t in texts], dtype=np.uint64)
    clusters = NearDuplicateClusters(np.array([2, 1, 0]))
    for k in range(bands.shape[1]):
        clusters.add_band(bands[:, k], np.ones(3, dtype=bool))
    near, survivor = clusters.duplicates(3)
    assert near.tolist() == [True, False, False] and survivor == {0: 1}


def test_duplicates_across_sources_and_languages_are_counted(tmp_path):
    km = km_docs(20)
    en = en_docs(20)
    shared = en[0]
    near_copy = en[1][:-1] + " today."  # nearly the same document
    a = write_lines(tmp_path / "en_a.txt", en)
    b = write_lines(tmp_path / "en_b.txt", [shared, near_copy] + en_docs(10, seed=5))
    k = write_lines(tmp_path / "km.txt", km + [km[0]])
    m = run_prepare(cfg(tmp_path, english=[a, b], khmer=[k]))
    c = m["counts"]
    assert c["en:en_b.txt"]["dropped:duplicate"] == 1  # the copy in the later source goes
    assert c["en:en_a.txt"].get("dropped:duplicate", 0) == 0
    assert c["km:km.txt"]["dropped:duplicate"] == 1
    assert c["en:en_b.txt"]["dropped:near_duplicate"] == 1
    for name, counts in c.items():
        dropped = sum(v for key, v in counts.items() if key.startswith("dropped:"))
        assert counts["read"] == counts["kept"] + dropped, name
    off = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "o2"), english=[a, b], khmer=[k], near_dedup=False))
    assert "dropped:near_duplicate" not in off["counts"]["en:en_b.txt"]


# --- mixing --------------------------------------------------------------------------------------

def test_source_shares_strategies():
    srcs = [{"name": "k1", "lang": "km", "weight": None, "chars": 100},
            {"name": "k2", "lang": "km", "weight": None, "chars": 300},
            {"name": "e1", "lang": "en", "weight": None, "chars": 1600}]
    w = source_shares(srcs, {"km": 0.5, "en": 0.5})
    assert w == pytest.approx({"k1": 0.125, "k2": 0.375, "e1": 0.5})
    t = source_shares(srcs, {}, "temperature", alpha=0.5)
    assert t["e1"] == pytest.approx(2 / 3)  # languages: sqrt(400) = 20 against sqrt(1600) = 40
    assert t["k2"] / t["k1"] == pytest.approx(3 ** 0.5)  # inside Khmer: sqrt(300) / sqrt(100)
    assert sum(t.values()) == pytest.approx(1.0)
    assert unimax_budgets({"km": 400, "en": 1600}, 2000, {"km": 2, "en": 2}) == {"km": 800, "en": 1200}
    u = source_shares(srcs, {}, "unimax", budget=2000, max_epochs={"k1": 1, "k2": 1, "e1": 1})
    assert u["k1"] + u["k2"] == pytest.approx(0.2)  # 400 chars at one epoch out of 2000
    with pytest.raises(ValueError, match="give every source of a language a weight"):
        source_shares([dict(srcs[0], weight=1.0), srcs[1]], {"km": 1})


def test_temperature_alpha_one_is_natural_and_zero_uniform():
    srcs = [{"name": "k", "lang": "km", "weight": None, "chars": 100},
            {"name": "e", "lang": "en", "weight": None, "chars": 900}]
    assert source_shares(srcs, {}, "temperature", alpha=1.0) == pytest.approx({"k": 0.1, "e": 0.9})
    assert source_shares(srcs, {}, "temperature", alpha=0.0) == pytest.approx({"k": 0.5, "e": 0.5})


def test_plan_sources_respects_target_and_max_epochs():
    lengths = {"k": np.full(100, 10), "e": np.full(1000, 10)}
    counts, plans, total, reached = plan_sources(lengths, {"k": "km", "e": "en"}, {"k": 0.5, "e": 0.5},
                                                 {"k": 3.0, "e": 1.0}, seed=0, target_chars=4000)
    assert reached and total == 4000
    assert plans["k"].selected_chars == 2000 and plans["k"].epochs == pytest.approx(2.0)
    assert counts["k"].max() == 2
    _, plans, total, reached = plan_sources(lengths, {"k": "km", "e": "en"}, {"k": 0.5, "e": 0.5},
                                            {"k": 3.0, "e": 1.0}, seed=0, target_chars=10**6)
    assert not reached and total == 6000  # 1000 Khmer chars x 3 epochs / 0.5


def test_per_source_weights_target_and_reproducibility(tmp_path):
    k1 = write_lines(tmp_path / "k1.txt", km_docs(60, seed=1))
    k2 = write_lines(tmp_path / "k2.txt", km_docs(60, seed=2))
    en = write_lines(tmp_path / "en.txt", en_docs(200))
    kw = dict(khmer=[k1, k2], english=[en], source_weights=["km:k1.txt=3", "km:k2.txt=1"],
              max_epochs=3.0, target_chars=20000)
    a = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "a"), **kw))
    run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "b"), **kw))
    ms = a["mixture_sources"]
    assert ms["km:k1.txt"]["requested_share"] == pytest.approx(0.375)
    assert abs(ms["km:k1.txt"]["realized_share"] - 0.375) < 0.02
    assert abs(ms["km:k2.txt"]["realized_share"] - 0.125) < 0.02
    assert ms["km:k1.txt"]["epochs"] > 1  # upsampled, within max_epochs
    assert abs(sum(p["selected_chars"] for p in ms.values()) - 20000) < 200
    assert a["target_reached"] is True
    da, _ = load_prepared(tmp_path / "a")
    db, _ = load_prepared(tmp_path / "b")
    assert da["train"]["id"] == db["train"]["id"]  # same seed, same order
    with pytest.raises(StageError, match=r"match no source"):
        run_prepare(cfg(tmp_path, khmer=[k1], source_weights=["km:nope.txt=1"]))


@pytest.mark.parametrize("strategy", ["temperature", "unimax"])
def test_mix_strategies_through_prepare(tmp_path, strategy, caplog):
    from tonsai.data.mix import unimax_budgets

    km = write_lines(tmp_path / "km.txt", km_docs(40))
    en = write_lines(tmp_path / "en.txt", en_docs(400))
    kw = dict(khmer=[km], english=[en], mix_strategy=strategy, temperature_alpha=0.3, validation_fraction=0.05,
              max_epochs=2.0)
    if strategy == "unimax":
        kw["target_chars"] = 30000
    with caplog.at_level("WARNING"):
        m = run_prepare(cfg(tmp_path, **kw))
    avail = {lang: m["mixture"][lang]["available_chars"] for lang in ("km", "en")}
    if strategy == "temperature":
        w = {lang: c ** 0.3 for lang, c in avail.items()}
        want = {lang: v / sum(w.values()) for lang, v in w.items()}
    else:
        budgets = unimax_budgets(avail, 30000, {"km": 2.0, "en": 2.0})
        want = {lang: v / sum(budgets.values()) for lang, v in budgets.items()}
    for lang in ("km", "en"):
        assert m["mixture"][lang]["requested_share"] == pytest.approx(want[lang], abs=1e-6)
        assert abs(m["mixture"][lang]["realized_share"] - want[lang]) < 0.03, m["mixture"]
        assert m["mixture"][lang]["epochs"] <= 2.0 + 1e-9
    # the natural share of Khmer here is far below either strategy's
    assert avail["km"] / sum(avail.values()) < m["mixture"]["km"]["realized_share"]
    assert "ignored" not in caplog.text


def test_temperature_says_it_ignores_source_weights(tmp_path, caplog):
    k1 = write_lines(tmp_path / "k1.txt", km_docs(30, seed=1))
    k2 = write_lines(tmp_path / "k2.txt", km_docs(30, seed=2))
    with caplog.at_level("WARNING"):
        run_prepare(cfg(tmp_path, khmer=[k1, k2], mix_strategy="temperature",
                        source_weights=["km:k1.txt=3", "km:k2.txt=1"]))
    assert "weights of km:k1.txt, km:k2.txt" in caplog.text and "ignored" in caplog.text


@pytest.mark.slow
def test_shipped_mix_file_gives_the_requested_shares(tmp_path, shared_data, monkeypatch):
    """configs/data/shared_km_en.yaml as the README runs it: all four shared sources, 60/40."""
    monkeypatch.chdir(REPO)  # its paths are relative to the repository root
    m = run_prepare(cfg(tmp_path, mix="configs/data/shared_km_en.yaml", khmer_weight=0.6, english_weight=0.4))
    for lang, want in (("km", 0.6), ("en", 0.4)):
        assert abs(m["mixture"][lang]["realized_share"] - want) < 0.01, m["mixture"]
    for name, p in m["mixture_sources"].items():
        assert abs(p["realized_share"] - p["requested_share"]) < 0.01, (name, p)
        assert p["epochs"] <= p["max_epochs"] + 1e-9
    assert sorted(m["mixture_sources"]) == ["en:shakespeare", "en:wikitext", "km:news", "km:oscar"]


def test_mix_file_shares_on_shared_data(tmp_path, shared_data):
    from tonsai.data.sources import load_mix_file

    shipped = load_mix_file(REPO / "configs" / "data" / "shared_km_en.yaml")
    assert [s.name for s in shipped] == ["km:news", "km:oscar", "en:wikitext", "en:shakespeare"]
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"""sources:
  - {{name: km:ntrex, path: {shared_data}/ntrex128_khm_eng_dev/khm_Khmr.txt, lang: km, weight: 2}}
  - {{name: km:flores, path: {shared_data}/sib200_flores_khm_eng_dev/khm_Khmr.txt, lang: km, weight: 1}}
  - {{name: en:wikitext, path: {shared_data}/english_wikitext2_raw/wikitext2.valid.txt, lang: en, weight: 3}}
  - {{name: en:ntrex, path: {shared_data}/ntrex128_khm_eng_dev/eng_Latn.txt, lang: en, weight: 1, max_epochs: 2}}
""", encoding="utf-8")
    m = run_prepare(cfg(tmp_path, mix=str(mix), khmer_weight=0.6, english_weight=0.4))
    for lang, want in (("km", 0.6), ("en", 0.4)):
        assert abs(m["mixture"][lang]["realized_share"] - want) < 0.01, m["mixture"]
    ms = m["mixture_sources"]
    assert ms["km:ntrex"]["requested_share"] == pytest.approx(0.4)
    for name, p in ms.items():
        assert abs(p["realized_share"] - p["requested_share"]) < 0.01, (name, p)
        assert p["epochs"] <= p["max_epochs"] + 1e-9
    assert {i["source"] for i in m["inputs"]} == set(ms)
    assert all(f["sha256"] for i in m["inputs"] for f in i["files"])


# --- sharding, processes, resuming, completeness -------------------------------------------------

def _split_ids(path):
    dd, _ = load_prepared(path)
    return sorted(dd["train"]["id"]), sorted(dd["validation"]["id"]), dd["train"]["id"]


def test_shards_and_processes_give_the_same_dataset(tmp_path):
    km = write_lines(tmp_path / "km.txt", km_docs(80) + km_docs(5))  # exact duplicates across shards
    en = write_lines(tmp_path / "en.txt", en_docs(120))
    base = dict(khmer=[km], english=[en], seed=3)
    one = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "one"), **base))
    work = tmp_path / "work"
    for i in range(3):
        info = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "three"), num_shards=3, shard_index=i,
                               work_dir=str(work), **base))
        assert info["task"] == i
    assert not (tmp_path / "three").exists()
    three = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "three"), num_shards=3, merge_only=True,
                            work_dir=str(work), **base))
    procs = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "procs"), workers=2, **base))
    assert one["counts"] == three["counts"] == procs["counts"]
    assert one["counts"]["km:km.txt"]["dropped:duplicate"] == 5
    assert _split_ids(tmp_path / "one") == _split_ids(tmp_path / "three") == _split_ids(tmp_path / "procs")
    assert not work.exists()  # removed after a successful merge


def test_rerun_skips_finished_tasks_and_merge_needs_all(tmp_path, caplog):
    km = write_lines(tmp_path / "km.txt", km_docs(40))
    work = tmp_path / "work"
    base = dict(khmer=[km], num_shards=2, work_dir=str(work))
    run_prepare(cfg(tmp_path, shard_index=1, **base))
    with pytest.raises(StageError, match=r"document tasks \[0\] of 2 are not finished"):
        run_prepare(cfg(tmp_path, merge_only=True, **base))
    assert not (tmp_path / "out").exists()
    info = work / "docs" / "00001.parquet"  # task 1's documents, marked done in datatrove's completions
    assert (work / "logs" / "docs" / "completions" / "00001").is_file()
    before = info.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        run_prepare(cfg(tmp_path, keep_work_dir=True, **base))
    assert info.stat().st_mtime_ns == before
    assert "1 of 2 document tasks are finished already" in caplog.text
    # other settings: the finished shard is redone, not reused
    run_prepare(cfg(tmp_path, min_chars=25, keep_work_dir=True, overwrite=True, **base))
    assert info.stat().st_mtime_ns != before


def test_failed_run_leaves_no_complete_looking_output(tmp_path):
    good = write_lines(tmp_path / "km.txt", km_docs(20))
    run_prepare(cfg(tmp_path, khmer=[good]))
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    bad = write_lines(tmp_path / "km_bad.txt", ["ខ្លី", "short"])
    with pytest.raises(StageError, match="no km documents are left"):
        run_prepare(cfg(tmp_path, khmer=[bad], overwrite=True))
    assert (tmp_path / "out" / "manifest.json").read_text() == manifest  # the old output is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    # the work folder keeps only finished tasks' files (each marked complete), no half-written one
    work = tmp_path / "out.work"
    if work.exists():
        docs = list((work / "docs").iterdir())
        assert not [p for p in docs if p.name.startswith(".tmp-")]
        assert all((work / "logs" / "docs" / "completions" / p.stem).is_file() for p in docs)


def test_a_failure_while_writing_the_splits_leaves_nothing_behind(tmp_path, monkeypatch):
    from tonsai.data import splitwrite

    km = write_lines(tmp_path / "km.txt", km_docs(20))

    def broken_bucket(*args):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(splitwrite, "write_bucket", broken_bucket)  # the bucket sort step, in this process
    with pytest.raises(OSError, match="injected"):
        run_prepare(cfg(tmp_path, khmer=[km]))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_accounting_mismatch_is_an_error_not_an_assert():
    from tonsai.data.prepare import _check_accounting

    _check_accounting({"km:a.txt": {"read": 5, "kept": 3, "dropped:too_short": 2, "passed_filters": 4}})
    with pytest.raises(StageError, match=r"km:a.txt: 5 documents read but 3 kept \+ 1 dropped"):
        _check_accounting({"km:a.txt": {"read": 5, "kept": 3, "dropped:too_short": 1}})


def test_rejected_documents_are_written_with_reasons(tmp_path):
    km = write_lines(tmp_path / "km.txt", km_docs(10) + [km_docs(1)[0], "ខ្លី"])
    m = run_prepare(cfg(tmp_path, khmer=[km], write_rejected=True))
    rows = [json.loads(line) for f in sorted((tmp_path / "out" / "rejected").glob("*.jsonl.gz"))
            for line in gzip.open(f, "rt", encoding="utf-8")]
    assert sorted(r["reason"] for r in rows) == ["duplicate", "too_short"]
    assert sum(v for k, v in m["counts"]["km:km.txt"].items() if k.startswith("dropped:")) == len(rows)


def test_cli_exit_codes_and_messages(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    script = str(REPO / "scripts" / "prepare_dataset.py")
    r = subprocess.run([sys.executable, script, "--khmer", str(tmp_path / "missing.txt"), "--output-dir",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "missing.txt: no such file or folder" in r.stderr
    r = subprocess.run([sys.executable, script, "--khmer", "x", "--source-weights", "km:x=-1", "--output-dir",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "weights must be >= 0" in r.stderr
    r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=env)
    assert "hf:NAME[:CONFIG[:SPLIT]]" in r.stdout and "--num-shards" in r.stdout


def test_shuffled_writer_order_depends_only_on_seed_and_ids(tmp_path):
    import datasets

    from tonsai.data.writer import ShuffledSplitWriter

    rows = [(f"text {i}", "en", "s", f"id{i}") for i in range(50)]

    def write(name, items, buckets):
        w = ShuffledSplitWriter(tmp_path / name, tmp_path / f"tmp-{name}", seed=7, num_buckets=buckets)
        for r in items:
            w.add(*r)
        assert w.finish() == 50
        assert not (tmp_path / f"tmp-{name}").exists()
        return datasets.load_from_disk(str(tmp_path / name))

    a = write("a", rows, 3)
    b = write("b", rows[::-1], 3)
    assert len(list((tmp_path / "a").glob("data-*-of-00003.arrow"))) == 3
    assert a["id"] == b["id"] and sorted(a["id"]) == sorted(r[3] for r in rows)
    assert a["id"] != [r[3] for r in rows]  # shuffled
    assert a.column_names == ["text", "lang", "source", "id"]


def test_zero_source_weights_are_refused(tmp_path):
    k1 = write_lines(tmp_path / "k1.txt", km_docs(10, seed=1))
    k2 = write_lines(tmp_path / "k2.txt", km_docs(10, seed=2))
    with pytest.raises(StageError, match="all weights are zero"):
        run_prepare(cfg(tmp_path, khmer=[k1, k2], source_weights=["km:k1.txt=0", "km:k2.txt=0"]))
    assert not (tmp_path / "out").exists()
