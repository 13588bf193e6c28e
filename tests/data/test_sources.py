"""The readers of tonsai.data.sources: input formats, Hub specs and streams, paragraph mode, and bad
input (missing column, malformed JSON lines, invalid UTF-8, unreadable files)."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.corpus import cfg, en_docs, km_docs
from tonsai.data.prepare import run_prepare
from tonsai.data.prepared import load_prepared, load_splits
from tonsai.data.sources import ReadStats, Source, iter_documents
from tonsai.errors import StageError


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
    with pa.OSFile(str(tmp_path / "h.arrow"), "wb") as f, pa.ipc.new_stream(f, pa.schema([("text", pa.string())])) as w:
        for i in range(0, 7, 3):  # an Arrow stream in several batches, as the prepare stage writes its splits
            w.write_table(pa.table({"text": texts[i:i + 3]}))
    hub = tmp_path / "hub_folder"
    hub.mkdir()
    pq.write_table(pa.table({"text": texts}), hub / "train-00000.parquet")
    for path in ["a.jsonl.gz", "b.jsonl.zst", "c.json", "d.txt.gz", "e.parquet", "f_saved", "g_dict", "h.arrow",
                 f"hf:{hub}"]:
        full = path if path.startswith("hf:") else str(tmp_path / path)
        got = [d.text for d in iter_documents(Source(full, "en"), ReadStats())]
        assert got == texts, path
    # a folder holding all of them (the hub folder's parquet too): every input once, the saved
    # datasets' own files and splits not again
    folder_docs = list(iter_documents(Source(str(tmp_path), "en"), ReadStats()))
    assert len(folder_docs) == 7 * 9
    assert len({d.id for d in folder_docs}) == len(folder_docs)


def test_a_prepared_split_folder_is_a_source_read_in_its_stored_order(sample_pipeline):
    train = sample_pipeline / "data" / "dataset" / "train"
    got = [d.text for d in iter_documents(Source(str(train), "km"), ReadStats())]
    assert got == list(load_splits(sample_pipeline / "data" / "dataset")["train"]["text"]) and len(got) > 50


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


def test_json_files_written_with_a_byte_order_mark_are_read(tmp_path):
    """Windows tools start UTF-8 files with a BOM, which json.loads refuses: JSON lines and JSON arrays,
    plain and compressed, read as without it (a .txt file's BOM is removed by normalization)."""
    texts = km_docs(3)
    records = [{"text": t} for t in texts]
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.jsonl").write_bytes(bom + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    (tmp_path / "b.json").write_bytes(bom + json.dumps(records, ensure_ascii=False).encode())
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress((tmp_path / "a.jsonl").read_bytes()))
    for name in ("a.jsonl", "b.json", "c.jsonl.gz"):
        stats = ReadStats()
        assert [d.text for d in iter_documents(Source(str(tmp_path / name), "km"), stats)] == texts, name
        assert stats.invalid_utf8_lines == 0


def test_files_of_other_types_in_a_folder_are_named_and_compressed_parquet_is_explained(tmp_path, caplog):
    import logging

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("\n".join(en_docs(2)) + "\n", encoding="utf-8")
    (folder / "notes.md").write_text("# about this data\n", encoding="utf-8")
    (folder / "table.csv").write_text("text\nhello\n", encoding="utf-8")
    pq.write_table(pa.table({"text": en_docs(2)}), tmp_path / "b.parquet")
    (folder / "b.parquet.gz").write_bytes(gzip.compress((tmp_path / "b.parquet").read_bytes()))
    with caplog.at_level(logging.WARNING, logger="tonsai.data.sources"):
        assert [p.name for p in Source(str(folder), "en").files()] == ["a.txt"]
    assert "3 file(s) of a type prepare does not read are left out: b.parquet.gz, notes.md, table.csv" in caplog.text
    with pytest.raises(StageError, match="compressed inside, not as a whole file: decompress it first"):
        Source(str(folder / "b.parquet.gz"), "en").files()
    with pytest.raises(StageError, match=r"unsupported file type \(use .txt, .jsonl or .json"):
        Source(str(folder / "table.csv"), "en").files()


def _shared_inputs(tmp_path):
    """Every input format, with what makes finding documents without decoding them tricky: blank
    lines of Unicode whitespace only (NBSP, ideographic space, U+001C, NEL), CRLF, invalid UTF-8,
    bad JSON records, Khmer-only lines, rows split over several batches."""
    import datasets
    import zstandard

    texts = en_docs(6) + km_docs(6)
    lines = [texts[0], "\u00a0\u3000", texts[1], "\x1c", texts[2] + "\r", "\u0085", texts[3], "   ", texts[4],
             texts[5], "\u3000", texts[6], texts[7], texts[8], texts[9], texts[10], texts[11]]
    raw = "\n".join(lines).encode() + b"\n" + b"bad \xff\xfe bytes, long enough to pass\n\n"
    (tmp_path / "a.txt").write_bytes(raw)
    (tmp_path / "p.txt").write_bytes(raw.replace(texts[4].encode(), texts[4].encode() + b"\n\n"))  # paragraphs
    records = [{"text": t} for t in texts] + [{"content": "no text field"}, {"text": 3}]
    jsonl = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()
    jsonl = jsonl.replace(b"\n", b"\n\xc2\xa0\n", 1) + b"\n{not json\n" + b'{"text": "x \xff y long enough here"}\n'
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl))
    (tmp_path / "c.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    pq.write_table(pa.table({"text": texts}), tmp_path / "e.parquet", row_group_size=5)
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "f_saved"))
    with pa.OSFile(str(tmp_path / "h.arrow"), "wb") as f, pa.ipc.new_stream(f, pa.schema([("text", pa.string())])) as w:
        for i in range(0, len(texts), 5):
            w.write_table(pa.table({"text": texts[i:i + 5]}))
    hub = tmp_path / "hub"
    hub.mkdir()
    pq.write_table(pa.table({"text": texts}), hub / "train-00000.parquet")
    return ["a.txt", "p.txt", "b.jsonl.zst", "c.json", "e.parquet", "f_saved", "h.arrow", f"hf:{hub}"]


@pytest.mark.parametrize("world", [2, 3, 5])
def test_tasks_sharing_a_source_read_each_document_once_with_its_position_and_counts(tmp_path, world):
    """With a Share, a task decodes and parses only its own documents (its part of the positions):
    the tasks' documents together are the whole source's, at the same positions, with the same ids,
    and their counts (bytes, invalid UTF-8 lines, skipped records) add up to one reader's."""
    from tonsai.data.sources import ReadOptions, Share

    opts = ReadOptions(bad_records="skip")
    for name in _shared_inputs(tmp_path):
        full = name if name.startswith("hf:") else str(tmp_path / name)
        o = ReadOptions(bad_records="skip", doc_mode="paragraph") if name == "p.txt" else opts
        whole_stats = ReadStats()
        whole = [(d.id, d.text, d.skip_reason) for d in iter_documents(Source(full, "en"), whole_stats, options=o)]
        got, stats = {}, []
        for rank in range(world):
            share, st = Share.of(rank, world), ReadStats()
            for d in iter_documents(Source(full, "en"), st, options=o, share=share):
                mine = (share.rows(len(whole))[0] <= share.pos < share.rows(len(whole))[1] if name.endswith(".parquet")
                        else share.owned(share.pos, 1).tolist() == [0])  # a Parquet part: a run of rows
                assert share.pos not in got and mine, name
                got[share.pos] = (d.id, d.text, d.skip_reason)
            stats.append(st)
        assert [got[p] for p in sorted(got)] == whole and sorted(got) == list(range(len(whole))), name
        for field in ("bytes", "invalid_utf8_lines", "malformed_records", "documents"):
            assert sum(getattr(s, field) for s in stats) == getattr(whole_stats, field), (name, field)
        assert len(whole) >= (6 if name == "p.txt" else 12), name


def test_a_json_file_without_the_text_field_is_judged_on_all_of_its_records(tmp_path):
    """With several tasks each reads part of a file: a file where only some records lack the
    field passes (one task may see none with it), one where all do fails, after the tasks."""
    some = [{"text": t} for t in en_docs(3)] + [{"body": "x"} for _ in range(6)]
    (tmp_path / "some.jsonl").write_text("".join(json.dumps(r) + "\n" for r in some), encoding="utf-8")
    m = run_prepare(cfg(tmp_path, english=[str(tmp_path / "some.jsonl")], bad_records="skip", num_shards=3))
    assert m["counts"]["en:some.jsonl"]["dropped:missing_text_field"] == 6
    # task 0 sees only records with the field, task 1 only records without (found in review)
    alternating = [r for t in en_docs(6) for r in ({"text": t}, {"body": "x"})]
    (tmp_path / "two.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alternating), encoding="utf-8")
    m = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "two"), english=[str(tmp_path / "two.jsonl")],
                        bad_records="skip", num_shards=2))
    assert m["counts"]["en:two.jsonl"]["dropped:missing_text_field"] == 6
    (tmp_path / "none.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in en_docs(6)), encoding="utf-8")
    for shards in (1, 3):
        with pytest.raises(StageError, match=r"none.jsonl: no record has a 'text' field"):
            run_prepare(cfg(tmp_path, output_dir=str(tmp_path / f"none{shards}"), english=[str(tmp_path / "none.jsonl")],
                            bad_records="skip", num_shards=shards))


def test_skipped_record_locations_are_the_first_of_the_input_whatever_the_tasks(tmp_path):
    from tonsai.data.sources import MAX_LOCATIONS

    lines = [json.dumps({"text": t}) if i % 2 else "{broken" for i, t in enumerate(en_docs(2 * MAX_LOCATIONS + 10))]
    (tmp_path / "e.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = [run_prepare(cfg(tmp_path, output_dir=str(tmp_path / f"o{n}"), english=[str(tmp_path / "e.jsonl")],
                           bad_records="skip", num_shards=n))["skipped_record_locations"] for n in (1, 3)]
    first = [f"{tmp_path / 'e.jsonl'}:{i + 1}" for i in range(0, 2 * MAX_LOCATIONS, 2)]
    assert got[0] == got[1] == {"en:e.jsonl": {"malformed_json": first}}
    # files are read in path order part by part ('a/' before 'a-b/', where strings put '-' first)
    for name in ("a/1.jsonl", "a-b/2.jsonl"):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text("{broken\n" * MAX_LOCATIONS + "".join(
            json.dumps({"text": t}) + "\n" for t in en_docs(6, seed=len(name))), encoding="utf-8")
    m = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "src_out"), english=[str(tmp_path / "src")],
                        bad_records="skip", num_shards=3))
    locs = m["skipped_record_locations"]["en:src"]["malformed_json"]
    assert locs == [f"{tmp_path / 'src' / 'a' / '1.jsonl'}:{i}" for i in range(1, MAX_LOCATIONS + 1)]
