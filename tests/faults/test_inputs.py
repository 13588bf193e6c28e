"""Fault probes on inputs: truncated compressed and Parquet files, every kind of bad JSON record,
a non-text Parquet column, binary or wrongly labelled eval inputs, a closed output pipe, and a
vocabulary smaller than the text's alphabet. Each runs the real stage on the sample corpus."""

import gzip
import json
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.data.sources import ReadStats, Source, iter_documents
from tonsai.errors import StageError
from tonsai.eval.inputs import parallel_pairs
from tonsai.eval.run import EvalConfig, run_eval
from tonsai.text import normalize
from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

from ..conftest import REPO, SAMPLE

EN = [line for line in (SAMPLE / "en.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
KM = [line for line in (SAMPLE / "km.txt").read_text(encoding="utf-8").splitlines() if line.strip()]


def jsonl(lines) -> bytes:
    return ("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in lines) + "\n").encode()


def parquet_bytes(table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return buf.getvalue().to_pybytes()


def prepare(tmp_path, path, **kw):
    return run_prepare(PrepareConfig(output_dir=str(tmp_path / "out"), english=[str(path)], min_validation_docs=1,
                                     **kw))


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.work/*/shard.json"))  # no shard looks finished either


# --- truncated inputs: an error naming the file, never a partial read ----------------------------

TRUNCATED = {
    "en.jsonl.gz": (lambda: gzip.compress(jsonl(EN))[:-40], r"en.jsonl.gz: truncated \.gz stream"),
    "en.txt.zst": (lambda: zstandard.ZstdCompressor().compress("\n".join(EN).encode())[:-40],
                   r"en.txt.zst: truncated \.zst stream \(ends inside a frame\) — re-download or re-compress it"),
    "en.parquet": (lambda: parquet_bytes(pa.table({"text": EN}))[:-200],
                   r"en.parquet: not a complete Parquet file .*it may be truncated"),
}


@pytest.mark.parametrize("name", sorted(TRUNCATED))
@pytest.mark.parametrize("bad_records", ["error", "skip"])
def test_truncated_input_stops_prepare_naming_the_file(tmp_path, name, bad_records):
    make, message = TRUNCATED[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(StageError, match=message):
        prepare(tmp_path, path, bad_records=bad_records)
    assert_nothing_written(tmp_path)


def test_truncated_jsonl_zst_with_skip_exits_1_through_the_script(tmp_path):
    """The issue's probe: a cut .jsonl.zst with --bad-records skip used to pass as malformed JSON."""
    path = tmp_path / "en.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(jsonl(EN * 12))[:-300])
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_dataset.py"), "--english", str(path),
                        "--output-dir", str(tmp_path / "out"), "--bad-records", "skip"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1, r.stderr
    assert f"error: {path}: truncated .zst stream (ends inside a frame)" in r.stderr
    assert "Traceback" not in r.stderr and "malformed" not in r.stderr
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("cut", ["between_batches", "inside_a_batch"])
def test_truncated_save_to_disk_arrow_file_names_the_file(tmp_path, cut):
    import datasets

    datasets.Dataset.from_dict({"text": EN * 40}).save_to_disk(str(tmp_path / "saved"), max_shard_size="10MB")
    (arrow,) = (tmp_path / "saved").glob("*.arrow")
    data = arrow.read_bytes()
    src = pa.BufferReader(data)
    reader = pa.ipc.open_stream(src)
    assert reader.read_next_batch().num_rows < 40 * len(EN)  # datasets writes batches of 1,000 rows
    end = src.tell() if cut == "between_batches" else src.tell() - 100
    arrow.write_bytes(data[:end])
    with pytest.raises(StageError, match=rf"{arrow.name}: (truncated Arrow stream|cannot read)"):
        prepare(tmp_path, tmp_path / "saved")
    assert_nothing_written(tmp_path)


def test_every_frame_of_a_multi_frame_zst_is_read(tmp_path):
    """`zstd -T`, pzstd and `cat a.zst b.zst` write several frames: the frame-end check must not stop
    after the first."""
    c = zstandard.ZstdCompressor()
    path = tmp_path / "km.txt.zst"
    path.write_bytes(b"".join(c.compress(("\n".join(KM[i:i + 10]) + "\n").encode()) for i in range(0, len(KM), 10)))
    docs = [d.text for d in iter_documents(Source(str(path), "km"), ReadStats())]
    assert docs == KM


def test_damaged_gzip_names_the_file(tmp_path):
    """Garbage decoded before gzip's CRC check at the end may pass as bad records, but the CRC (or
    deflate) error still stops the run: skipping bad records never makes a damaged file succeed."""
    data = bytearray(gzip.compress(jsonl(EN)))
    data[len(data) // 2:len(data) // 2 + 30] = bytes(30)  # a damaged stretch in the middle
    path = tmp_path / "en.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(StageError, match=r"en.jsonl.gz: cannot read .*damaged"):
        prepare(tmp_path, path, bad_records="skip")
    assert_nothing_written(tmp_path)


# --- bad JSON records: each kind an error with file:line, or skipped and counted by kind -----------

BAD = {  # line -> kind
    "{broken": "malformed_json",
    "[1, 2]": "not_an_object",
    '"just a string"': "not_an_object",
    "3": "not_an_object",
    '{"text": null}': "text_not_a_string",
    '{"text": 5}': "text_not_a_string",
    '{"text": ["a", "b"]}': "text_not_a_string",
    '{"text": {"a": 1}}': "text_not_a_string",
    '{"body": "no text field"}': "missing_text_field",
}
MESSAGES = {"malformed_json": "malformed JSON", "not_an_object": "not an object with a 'text' field",
            "text_not_a_string": "not a string", "missing_text_field": r"no 'text' field \(found \['body'\]\)"}


@pytest.mark.parametrize("line", sorted(BAD))
def test_each_bad_record_kind_is_an_error_with_file_and_line(tmp_path, line):
    path = tmp_path / "en.jsonl"
    path.write_bytes(jsonl(EN[:3]) + line.encode() + b"\n" + jsonl(EN[3:6]))
    with pytest.raises(StageError, match=rf"en.jsonl:4: .*{MESSAGES[BAD[line]]}.*--bad-records skip"):
        prepare(tmp_path, path)
    assert_nothing_written(tmp_path)


def test_bad_records_skip_counts_each_kind_with_its_locations(tmp_path):
    path = tmp_path / "en.jsonl"
    bad = sorted(BAD)
    body = jsonl(EN[:20]) + "".join(f"{b}\n" for b in bad).encode() + jsonl(EN[20:])
    path.write_bytes(body)
    m = prepare(tmp_path, path, bad_records="skip")
    c = m["counts"]["en:en.jsonl"]
    assert c["read"] == len(EN) + len(bad) and c["malformed_records"] == len(bad)
    want: dict[str, list[str]] = {}
    for i, b in enumerate(bad):
        want.setdefault(BAD[b], []).append(f"{path}:{21 + i}")
    assert {k: c[f"dropped:{k}"] for k in want} == {k: len(v) for k, v in want.items()}
    assert m["skipped_record_locations"]["en:en.jsonl"] == want
    assert c["passed_filters"] + sum(v for k, v in c.items() if k.startswith("dropped:")) == c["read"]
    assert c["passed_filters"] > 0  # the good records around them went through


def test_bad_records_skip_does_not_hide_a_wrong_text_column(tmp_path):
    path = tmp_path / "en.jsonl"
    path.write_bytes(jsonl(EN))
    with pytest.raises(StageError, match=r"en.jsonl: no record has a 'content' field, e.g. .*en.jsonl:1: no "
                                         r"'content' field \(found \['text'\]\); pass --text-column"):
        prepare(tmp_path, path, bad_records="skip", text_column="content")
    assert_nothing_written(tmp_path)


def test_bad_elements_of_a_json_array_are_skipped_by_kind(tmp_path):
    path = tmp_path / "en.json"
    path.write_text(json.dumps([{"text": t} for t in EN[:10]] + [{"text": None}, 7, {"body": "x"}]))
    stats = ReadStats()
    from tonsai.data.sources import ReadOptions

    docs = list(iter_documents(Source(str(path), "en"), stats, options=ReadOptions(bad_records="skip")))
    assert [d.skip_reason for d in docs[10:]] == ["text_not_a_string", "not_an_object", "missing_text_field"]
    assert stats.locations == {"text_not_a_string": [f"{path}[10]"], "not_an_object": [f"{path}[11]"],
                               "missing_text_field": [f"{path}[12]"]}
    with pytest.raises(StageError, match=r"en.json\[10\]: field 'text' is null, not a string"):
        list(iter_documents(Source(str(path), "en"), ReadStats()))


def test_parquet_text_column_of_integers_names_file_column_and_type(tmp_path):
    path = tmp_path / "en.parquet"
    pq.write_table(pa.table({"text": list(range(len(EN))), "body": EN}), path)
    with pytest.raises(StageError, match=r"en.parquet: column 'text' holds int64, not text; pass --text-column "
                                         r"with a string column \(found \['body'\]\)"):
        prepare(tmp_path, path)
    assert_nothing_written(tmp_path)


# --- evaluation inputs ------------------------------------------------------------------------------

def eval_cfg(tmp_path, **kw):
    # the model folder does not exist: these inputs must be refused before a model is loaded
    return EvalConfig(model_dir=str(tmp_path / "no-model"), output_dir=str(tmp_path / "eval"), device="cpu", **kw)


def test_eval_refuses_a_language_it_does_not_evaluate(tmp_path):
    with pytest.raises(StageError, match=r"--text 'xx=.*en.txt': language 'xx' is not one tonsai evaluates; "
                                         r"use km or en"):
        run_eval(eval_cfg(tmp_path, text=[f"km={SAMPLE / 'km.txt'}", f"xx={SAMPLE / 'en.txt'}"]))
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("kind", ["nul", "utf16", "not_utf8"])
def test_eval_refuses_binary_text_and_parallel_files(tmp_path, kind):
    path = tmp_path / "km.txt"
    if kind == "nul":
        path.write_bytes(b"\x00\x01\x02PK" + bytes(range(256)) * 8)
    elif kind == "utf16":
        path.write_bytes("\n".join(KM).encode("utf-16"))
    else:  # no NUL byte, but random bytes are mostly invalid UTF-8
        path.write_bytes(bytes(b for b in random.Random(0).randbytes(8192) if b))
    for cfg in (eval_cfg(tmp_path, text=[f"km={path}"]),
                eval_cfg(tmp_path, parallel=[str(path), str(SAMPLE / "en.txt")])):
        flag = "--text" if cfg.text else "--parallel"
        with pytest.raises(StageError, match=rf"{flag}: {path} does not look like text"):
            run_eval(cfg)
    assert not (tmp_path / "eval").exists()
    # the aligned reader refuses it on its own too; real text passes
    with pytest.raises(StageError, match="does not look like text"):
        parallel_pairs(path, SAMPLE / "en.txt")
    km, en, skipped = parallel_pairs(SAMPLE / "km.txt", SAMPLE / "en.txt")
    assert len(km) == len(en) == 51 and skipped == 0


# --- normalize_text.py into a pipe closed early ----------------------------------------------------

def test_normalize_text_into_head_ends_quietly(tmp_path):
    big = tmp_path / "km.txt"
    big.write_text("\n".join(KM * 60) + "\n", encoding="utf-8")  # ~1 MB, far past a pipe's buffer
    script = REPO / "scripts" / "normalize_text.py"
    # small pieces: many writes, so some surely come after head has gone
    cmd = f'"{sys.executable}" "{script}" "{big}" --chunk-chars 4096 2>"{tmp_path}/err" | head -1'
    r = subprocess.run(["bash", "-c", cmd + "; exit ${PIPESTATUS[0]}"], capture_output=True, text=True, cwd=REPO)
    err = (tmp_path / "err").read_text()
    assert r.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert r.stdout == normalize(KM[0]) + "\n"


# --- a vocabulary smaller than the text's alphabet ----------------------------------------------------

@pytest.mark.parametrize("size", [259, 300])
def test_byte_fallback_vocabulary_never_exceeds_the_requested_size(tmp_path, size):
    """The trainer used to add every character it saw on top (259 asked, 388 given on the sample)."""
    from transformers import AutoTokenizer

    files = [str(SAMPLE / "km.txt"), str(SAMPLE / "en.txt")]
    m = run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "tok"), input=files, vocab_size=size))
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert m["vocab_size"] == len(tok) == size
    text = normalize(KM[0] + " " + EN[0])
    assert tok.decode(tok(text)["input_ids"]) == text  # characters left out are written as bytes


def test_sentencepiece_states_the_smallest_vocabulary(tmp_path):
    files = [str(SAMPLE / "km.txt"), str(SAMPLE / "en.txt")]
    with pytest.raises(StageError, match=r"--vocab-size 259 is too small for SentencePiece on this text: "
                                         r"it needs at least \d{3}"):
        run_train_tokenizer(TokenizerConfig(output_dir=str(tmp_path / "tok"), input=files, vocab_size=259,
                                            algorithm="sentencepiece"))
    assert not (tmp_path / "tok").exists()
