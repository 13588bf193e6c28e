"""The prepare stage end to end: accounting, output and splits, options and errors, duplicates across
sources, sharding and processes, resuming, failures that leave nothing behind, and the CLI."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.data.corpus import EN, KM, REPO, cfg, en_docs, km_docs, write_lines
from tonsai.cli import parse_config
from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.data.prepared import load_prepared, load_splits
from tonsai.errors import StageError
from tonsai.manifest import read_manifest

@pytest.fixture
def corpus(tmp_path):
    km = KM + [KM[0], "ខ្លី", "This English line sits in the Khmer file by mistake, long enough.",
               "ក \u17b6 ខ \u17b6 គ \u17b6 ឃ \u17b6 ង \u17b6 ច \u17b6 ឆ \u17b6 ជ \u17b6 ឈ \u17b6 ញ \u17b6 ដ ឋ ឌ ឍ ណ ត ថ ទ ធ ន"]
    en = EN + ["ប្រទេសកម្ពុជាស្ថិតនៅក្នុងតំបន់អាស៊ីអាគ្នេយ៍ ហើយមានប្រជាជនច្រើន។", "short",
               "ebIm:anRbeTskm<úCa enAkñúgtMbn; GasIu¬GaeKñy_ rdæFanIKW PñMeBj ehIyRbCaCn",
               "A line with damage \ufffd\ufffd in it, long enough to pass the length filter."]
    return write_lines(tmp_path / "km.txt", km), write_lines(tmp_path / "en.txt", en)


def test_every_document_is_accounted_for(tmp_path, corpus):
    km, en = corpus
    m = run_prepare(PrepareConfig(output_dir=str(tmp_path / "out"), khmer=[km], english=[en], min_validation_docs=1))
    c = m["counts"]
    for name, counts in c.items():
        dropped = sum(v for k, v in counts.items() if k.startswith("dropped:"))
        assert counts["read"] == counts["kept"] + dropped, name
        assert counts["kept"] == counts["validation"] + counts["train_pool"]
    km_c = c["km:km.txt"]
    assert km_c["read"] == 9
    assert km_c["dropped:invalid_khmer_clusters"] == 1
    assert km_c["dropped:duplicate"] == 1
    assert km_c["dropped:too_short"] == 1
    assert km_c["dropped:script_en_in_km_source"] == 1
    assert c["en:en.txt"]["dropped:script_km_in_en_source"] == 1
    assert c["en:en.txt"]["dropped:too_short"] == 1
    assert c["en:en.txt"]["dropped:legacy_font_suspect"] == 1
    assert c["en:en.txt"]["dropped:replacement_chars"] == 1


def test_an_empty_source_is_counted_as_read_zero(tmp_path, corpus):
    km, en = corpus
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    m = run_prepare(PrepareConfig(output_dir=str(tmp_path / "out"), khmer=[km], english=[en, str(tmp_path / "empty.txt")],
                                  min_validation_docs=1))
    assert m["counts"]["en:empty.txt"]["read"] == m["counts"]["en:empty.txt"]["kept"] == 0


def test_output_loads_with_columns_and_disjoint_splits(tmp_path, corpus):
    km, en = corpus
    run_prepare(PrepareConfig(output_dir=str(tmp_path / "out"), khmer=[km], english=[en], min_validation_docs=1))
    dd, manifest = load_prepared(tmp_path / "out")
    assert set(dd) == {"train", "validation"}
    assert dd["train"].column_names == ["text", "lang", "source", "id"]
    assert set(dd["validation"]["lang"]) == {"km", "en"}
    assert not set(dd["train"]["id"]) & set(dd["validation"]["id"])
    assert manifest["normalizer_version"]


def test_validation_split_does_not_move_when_weights_change(tmp_path, corpus):
    km, en = corpus
    a = run_prepare(PrepareConfig(output_dir=str(tmp_path / "a"), khmer=[km], english=[en], khmer_weight=0.2))
    b = run_prepare(PrepareConfig(output_dir=str(tmp_path / "b"), khmer=[km], english=[en], khmer_weight=0.8))
    va, _ = load_prepared(tmp_path / "a")
    vb, _ = load_prepared(tmp_path / "b")
    assert sorted(va["validation"]["id"]) == sorted(vb["validation"]["id"])
    assert a["mixture"]["km"]["requested_share"] == pytest.approx(0.2 / 0.7)  # --english-weight defaults to 0.5
    assert b["mixture"]["km"]["requested_share"] == pytest.approx(0.8 / 1.3)


def test_realized_shares_within_one_percent_on_real_data(tmp_path, shared_data):
    m = run_prepare(PrepareConfig(
        output_dir=str(tmp_path / "out"),
        khmer=[str(shared_data / "khmer_news_kh_data_1000" / "khm_news_orig.txt")],
        english=[str(shared_data / "english_wikitext2_raw" / "wikitext2.valid.txt")],
        khmer_weight=0.6, english_weight=0.4))
    for lang, want in (("km", 0.6), ("en", 0.4)):
        assert abs(m["mixture"][lang]["realized_share"] - want) < 0.01, m["mixture"]


def test_routing_thresholds_are_options(tmp_path, corpus):
    km, en = corpus
    strict = run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[km], english=[en],
                                       min_validation_docs=1, khmer_min_chars=60))
    # the shorter Khmer lines now fall under the Khmer minimum and are routed 'mixed'
    assert strict["counts"]["km:km.txt"]["dropped:script_mixed_in_km_source"] >= 1
    with pytest.raises(SystemExit):
        parse_config(PrepareConfig, "p", ["--khmer", "a", "--output-dir", "o", "--mixed-min-share", "0.9"])


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="nope.txt: no such file"):
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[str(tmp_path / "nope.txt")]))
    assert not (tmp_path / "o").exists()


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "km.jsonl"
    p.write_text(json.dumps({"text": KM[0]}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"km.jsonl:2: malformed JSON \(Expecting property name enclosed in double quotes at column 2\)"):
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[str(p)]))


def test_the_reader_and_the_writer_report_their_own_time(tmp_path):
    """The manifest's per-task times: the reader (reading and hashing) and the writer (tables and
    Parquet) count their own work, not the blocks they pull from or feed (they showed 0)."""
    m = run_prepare(cfg(tmp_path, khmer=[write_lines(tmp_path / "km.txt", km_docs(1000))],
                        english=[write_lines(tmp_path / "en.txt", en_docs(1000))]))
    steps = m["shard_timings"][0]["worker_step_s"]
    reader, writer = steps["📖 - READER: tonsai sources"], steps["💽 - WRITER: keyed docs"]
    others = sum(steps.values()) - reader - writer
    assert 0 < reader < others and 0 < writer < others, steps


def test_source_identity_covers_a_hub_sources_options_and_skips_hidden_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tonsai.data.prepare import source_identity
    from tonsai.data.sources import Source

    hub = tmp_path / "hub"
    (hub / ".cache" / "huggingface").mkdir(parents=True)
    pq.write_table(pa.table({"text": en_docs(5), "alt": en_docs(5, seed=3)}), hub / "train-0.parquet")
    a = source_identity(Source(f"hf:{hub}", "en"))
    assert [f[0] for f in a["files"]] == [str(hub / "train-0.parquet")]
    (hub / ".cache" / "huggingface" / "x.lock").write_text("hf download's own files")
    assert source_identity(Source(f"hf:{hub}", "en")) == a
    for change in ({"text_column": "alt"}, {"split": "test"}, {"revision": "abc"}):
        assert source_identity(Source(f"hf:{hub}", "en", **change)) != a, change


def test_json_error_messages_read_well(tmp_path):
    p = tmp_path / "km.jsonl"
    p.write_bytes(b'{"text": "a\tb"}\n')  # a raw tab inside a string: json says "Invalid control character at"
    with pytest.raises(StageError, match=r"km.jsonl:1: malformed JSON \(Invalid control character at column 12\)"):
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[str(p)]))


def test_missing_text_column_lists_columns(tmp_path):
    p = tmp_path / "km.jsonl"
    p.write_text(json.dumps({"body": KM[0], "url": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"no 'text' field \(found \['body', 'url'\]\)"):
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[str(p)]))


def test_invalid_utf8_is_counted(tmp_path):
    p = tmp_path / "km.txt"
    p.write_bytes(KM[1].encode() + b"\n" + KM[2].encode() + b"\xff\xfe\n" + KM[3].encode() + b"\n")
    m = run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[str(p)], min_validation_docs=1))
    assert m["counts"]["km:km.txt"]["invalid_utf8_lines"] == 1
    # one line in three: worth asking whether the file is UTF-8 text at all
    assert any("1 of its lines are not valid UTF-8" in w and "iconv" in w for w in m["warnings"])


@pytest.mark.parametrize("argv, message", [
    (["--khmer", "a", "--english", "b", "--khmer-weight", "-1", "--output-dir", "o"], "must be >= 0"),
    (["--khmer", "a", "--english", "b", "--khmer-weight", "0", "--english-weight", "0", "--output-dir", "o"],
     "all mixing weights are zero"),
    (["--output-dir", "o"], "at least one source"),
    (["--khmer", "a"], "--output-dir"),
])
def test_bad_options_exit_2_with_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(PrepareConfig, "prepare", argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_result_is_an_error(tmp_path):
    p = write_lines(tmp_path / "km.txt", ["ខ្លី", "short"])
    with pytest.raises(StageError, match="no km documents are left"):
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[p]))
    assert not (tmp_path / "o").exists()


def test_manifest_is_required_downstream(tmp_path):
    (tmp_path / "half").mkdir()
    from tonsai.manifest import ManifestError

    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(tmp_path / "half", "prepare")


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
    with caplog.at_level("INFO"):
        run_prepare(cfg(tmp_path, shard_index=1, **base))
    assert "document task 1 of 2 is done" in caplog.text and "1 task(s) left before --merge-only: [0]" in caplog.text
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
    # a --shard-index job with other settings would wipe the other jobs' finished tasks: refused
    with pytest.raises(StageError, match=r"holds document tasks made with other settings or inputs \(min_chars differ"):
        run_prepare(cfg(tmp_path, min_chars=25, shard_index=0, **base))
    assert info.stat().st_mtime_ns == before
    # a whole run with other settings: the finished shard is redone, not reused
    run_prepare(cfg(tmp_path, min_chars=25, keep_work_dir=True, overwrite=True, **base))
    assert info.stat().st_mtime_ns != before


def test_an_input_changed_between_shard_jobs_is_named_and_the_tasks_are_redone(tmp_path):
    """A save_to_disk folder re-saved after the first job (its folder's size and time stay), and a
    file appended to before --merge-only: refused with the file named, never a dataset mixing the
    old and new versions; after the error, rerunning the jobs redoes every task."""
    import datasets

    saved = tmp_path / "km_saved"
    datasets.Dataset.from_dict({"text": km_docs(30)}).save_to_disk(str(saved))
    en = write_lines(tmp_path / "en.txt", en_docs(30))
    base = dict(khmer=[str(saved)], english=[en], num_shards=2, work_dir=str(tmp_path / "work"))
    run_prepare(cfg(tmp_path, shard_index=0, **base))
    datasets.Dataset.from_dict({"text": km_docs(31, seed=7)}).save_to_disk(str(saved))
    with pytest.raises(StageError, match=r"changed inputs: .*km_saved/data-00000-of-00001.arrow.*\); .* An input "
                                         r"changed since the jobs in it ran: delete .*work and run every"):
        run_prepare(cfg(tmp_path, shard_index=1, **base))
    shutil.rmtree(tmp_path / "work")
    for i in range(2):  # the remedy it gives: every job again
        run_prepare(cfg(tmp_path, shard_index=i, **base))
    # a mistyped --merge-only (another input list or option) is only refused, saying what differs:
    # the finished tasks stay valid
    with pytest.raises(StageError, match=r"made with other settings or inputs \(inputs differ\); run --merge-only "
                                         r"with the same options and inputs as the --shard-index jobs"):
        run_prepare(cfg(tmp_path, **dict(base, english=[en, en]), merge_only=True))
    with pytest.raises(StageError, match=r"\(min_chars differ\)"):
        run_prepare(cfg(tmp_path, **base, min_chars=25, merge_only=True))
    with pytest.raises(StageError, match=r"holds no document tasks: run the --shard-index jobs first"):
        run_prepare(cfg(tmp_path, **dict(base, work_dir=str(tmp_path / "none")), merge_only=True))
    assert "stale" not in (tmp_path / "work" / "settings.json").read_text()
    with open(en, "a", encoding="utf-8") as f:
        f.write(en_docs(1, seed=9)[0] + "\n")
    with pytest.raises(StageError, match=rf"the inputs changed since the document tasks read them; changed inputs: {en}"):
        run_prepare(cfg(tmp_path, merge_only=True, **base))
    # the folder is marked: a --shard-index job is refused (deleting the others' tasks could race
    # with them), a run of all the tasks redoes them
    with pytest.raises(StageError, match=r"Its tasks must all be redone: delete .*work and run every --shard-index"):
        run_prepare(cfg(tmp_path, shard_index=0, **base))
    m = run_prepare(cfg(tmp_path, **base))
    clean = run_prepare(cfg(tmp_path, khmer=[str(saved)], english=[en], output_dir=str(tmp_path / "clean")))
    assert m["counts"] == clean["counts"] and m["counts"]["en:en.txt"]["read"] == 31
    assert load_splits(tmp_path / "out" / "dataset")["train"]["id"] == load_splits(tmp_path / "clean" / "dataset")["train"]["id"]


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


def test_a_bucket_too_large_for_one_string_chunk_is_sorted_as_large_strings(tmp_path, monkeypatch):
    """Past 2 GiB a bucket cannot be one string chunk: it is sorted as large_string and written back
    as string; the dataset is byte for byte the same (the threshold lowered to 0 here)."""
    from tonsai.data import writer

    base = dict(khmer=[write_lines(tmp_path / "km.txt", km_docs(60))], english=[write_lines(tmp_path / "en.txt",
                                                                                           en_docs(60))])
    run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "small"), **base))
    monkeypatch.setattr(writer, "ONE_CHUNK_MAX_BYTES", 0)
    run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "large"), **base))
    files = sorted(p.relative_to(tmp_path / "small") for p in (tmp_path / "small" / "dataset").rglob("*.arrow"))
    assert files and all((tmp_path / "small" / f).read_bytes() == (tmp_path / "large" / f).read_bytes() for f in files)


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
    # every rejected row says where it was: the duplicate is line 11 (the copy of line 1)
    assert sorted(r["location"] for r in rows) == [f"{km}:11", f"{km}:12"]


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


def test_zero_source_weights_are_refused(tmp_path):
    k1 = write_lines(tmp_path / "k1.txt", km_docs(10, seed=1))
    k2 = write_lines(tmp_path / "k2.txt", km_docs(10, seed=2))
    with pytest.raises(StageError, match="all weights are zero"):
        run_prepare(cfg(tmp_path, khmer=[k1, k2], source_weights=["km:k1.txt=0", "km:k2.txt=0"]))
    assert not (tmp_path / "out").exists()
