"""How the document tasks share the inputs (tonsai.data.sharding): each task reads its stripe of
every source's files, parts of the files it shares tile them, and the documents of all tasks
together are a lone reader's, at the same slots, with the same manifest inputs."""

import json

import numpy as np
import pytest

from tests.data.corpus import en_docs, km_docs, write_lines
from tests.data.test_sources import _shared_inputs
from tonsai.data.blocks import SourceReader
from tonsai.data.sharding import PERIOD, slots, task_units, unit_layout, unit_sizes
from tonsai.data.sources import ReadOptions, ReadStats, Share, Source, input_record, iter_documents, iter_unit
from tonsai.errors import StageError


def _many_files(folder, n=11, seed=0):
    """``n`` .txt files of 0 to 400 lines (one empty), as a source's folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(n):
        k = 0 if i == 3 else int(rng.integers(1, 400))
        (folder / f"part-{i:02d}.txt").write_text("".join(f"{t}\n" for t in en_docs(k, seed=i)), encoding="utf-8")
    return Source(str(folder), "en")


@pytest.mark.parametrize("world", [1, 2, 3, 5, 11, 16, 40])
def test_parts_tile_every_input_once_and_a_task_opens_its_stripe_and_at_most_two_more(tmp_path, world):
    sources = [_many_files(tmp_path / "a"), Source(write_lines(tmp_path / "one.txt", km_docs(50)), "km"),
               _many_files(tmp_path / "b", n=4, seed=1)]
    sizes = [size for s in sources for _, size in unit_sizes(s)]
    parts: dict[int, list[tuple[int, int, bool]]] = {}
    for rank in range(world):
        mine = task_units(sources, rank, world)
        assert [u.unit for u in mine] == sorted({u.unit for u in mine})  # input order, each once
        for si, source in enumerate(sources):
            units = [u for u in mine if u.source == si]
            whole = [u for u in units if u.share.whole]
            assert len(units) - len(whole) <= 2  # a part of the files at its stripe's two ends
            stripe = sum(size for _, size in unit_sizes(source)) / world
            assert sum(sizes[u.unit] for u in whole) <= stripe + 1
        for u in mine:
            parts.setdefault(u.unit, []).append((u.share.lo, u.share.hi, u.lead))
    assert sorted(parts) == list(range(len(sizes)))
    for unit, ps in parts.items():
        ps.sort()
        assert ps[0][0] == 0 and ps[-1][1] == PERIOD and all(a[1] == b[0] for a, b in zip(ps, ps[1:])), (unit, ps)
        assert [lead for *_, lead in ps] == [True] + [False] * (len(ps) - 1)
    if world <= 5:  # more files than tasks: most files are opened by one task only
        assert sum(len(ps) for ps in parts.values()) <= len(sizes) + 2 * (world - 1) * len(sources)


@pytest.mark.parametrize("world", [2, 3, 5, 7, 16])
def test_a_shared_file_is_split_evenly_from_its_first_documents(world):
    """A file shared by every task (one file, or a compressed one): any run of its first documents
    is split in proportion to the parts (a short file must not go all to the first task)."""
    shares = [Share.of(rank, world) for rank in range(world)]
    owner = np.full(5000, -1)
    for rank, share in enumerate(shares):
        owner[share.owned(0, len(owner))] = rank
        assert [share.next() for _ in range(300)] == [owner[p] == rank for p in range(300)]
    assert (owner >= 0).all()
    for n in (world, 10, 100, 1000, 5000):
        counts = np.bincount(owner[:n], minlength=world)
        assert counts.max() - counts.min() <= max(2, np.log2(n) / 2), (n, counts.tolist())
    if world == 2:
        assert owner[:8].tolist() == [0, 1] * 4


@pytest.mark.parametrize("world", [1, 2, 3, 7, 16])
def test_tasks_read_every_document_once_at_a_lone_readers_slot(tmp_path, world):
    """Through the reader block itself: its documents' orders become slots that put every document
    where one reader of all the sources finds it; counts add up; the inputs are one reader's."""
    folder = tmp_path / "in"
    folder.mkdir()
    hub = _shared_inputs(folder)[-1]  # every input format in one folder, and a Hub-style stream
    sources = [Source(str(folder), "en"), Source(hub, "km"), _many_files(tmp_path / "many", n=5)]
    opts = ReadOptions(bad_records="skip")
    lone_stats = {s.name: ReadStats() for s in sources}
    lone = [(d.id, d.text) for s in sources for d in iter_documents(s, lone_stats[s.name], options=opts)]
    got, reports, summaries = {}, [], []
    for rank in range(world):
        reader = SourceReader(sources, opts, summary_dir=str(tmp_path / "read"))
        docs = list(reader.run(rank=rank, world_size=world))
        summary = json.loads((tmp_path / "read" / f"{rank:05d}.json").read_text(encoding="utf-8"))
        reports.append(summary["units"])
        summaries.append(summary)
        got[rank] = docs
    unit_offs, offs, inputs = unit_layout(reports, sources)
    placed = {}
    for docs in got.values():
        at = slots(np.array([d.metadata["order"] for d in docs], dtype=np.int64), unit_offs)
        for slot, d in zip(at.tolist(), docs):
            assert slot not in placed
            placed[slot] = (d.id, d.text)
    assert [placed[i] for i in range(len(placed))] == lone
    assert np.diff(offs).tolist() == [lone_stats[s.name].documents for s in sources]
    assert inputs == [input_record(s) for s in sources]
    for kind, field in (("invalid_utf8_lines", "invalid_utf8_lines"), ("malformed_records", "malformed_records")):
        for s in sources:
            assert sum(x[kind].get(s.name, 0) for x in summaries) == getattr(lone_stats[s.name], field), (kind, s.name)
    assert sum(x["bytes_in"] for x in summaries) == sum(st.bytes for st in lone_stats.values())


@pytest.mark.parametrize("world", [2, 3, 8])
def test_tasks_sharing_a_parquet_file_read_only_the_row_groups_of_their_rows(tmp_path, monkeypatch, world):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = en_docs(230)
    pq.write_table(pa.table({"text": texts}), tmp_path / "big.parquet", row_group_size=20)  # 12 row groups
    source, opts = Source(str(tmp_path / "big.parquet"), "en"), ReadOptions()
    read_groups: list[list[int]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kw):  # records which row groups a task asks for, then reads them
        read_groups.append(list(kw.get("row_groups") or range(self.num_row_groups)))
        return real(self, *args, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    got = {}
    for rank in range(world):
        (u,) = task_units([source], rank, world)
        for d in iter_unit(source, u.path, ReadStats(), opts, u.share):
            got[u.share.pos] = d.text
        assert u.share.pos == len(texts) - 1  # the file's document count, whatever the part
    assert [got[i] for i in range(len(texts))] == texts
    groups = [g for task in read_groups for g in task]
    assert sorted(set(groups)) == list(range(12)) and len(groups) <= 12 + world - 1  # a group split at most once


def test_a_big_file_shared_by_many_tasks_is_named_with_the_size_to_split_it_to(tmp_path, monkeypatch, caplog):
    import gzip

    from tests.data.corpus import cfg
    from tonsai.data import sharding
    from tonsai.data.prepare import start_work

    big = tmp_path / "big.jsonl.gz"
    big.write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in en_docs(400)).encode()))
    small = write_lines(tmp_path / "small.txt", en_docs(3))  # under the threshold
    monkeypatch.setattr(sharding, "CROWDED_MIN_BYTES", 1000)  # the 256 MB of a real corpus, scaled down
    sources = [Source(str(big), "en"), Source(small, "en")]
    assert [(p, t) for p, _, t, _ in sharding.crowded_inputs(sources, 8)] == [(big, 8)]
    assert sharding.crowded_inputs(sources, 2) == []  # two tasks: one boundary, each reads its half's share
    with caplog.at_level("WARNING"):
        start_work(cfg(tmp_path, english=[str(big), small], num_shards=8), sources)
    assert f"{big} (0 MB) is shared by up to 8 document tasks" in caplog.text and "split it into files of under" \
        in caplog.text


def test_an_input_that_changed_between_two_tasks_is_named(tmp_path):
    a, b = write_lines(tmp_path / "a.txt", en_docs(5)), write_lines(tmp_path / "b.txt", en_docs(4))
    source = Source(str(tmp_path), "en")
    report = {"0": {"source": 0, "documents": 5, "input": a, "inputs": {"files": []}},
              "1": {"source": 0, "documents": 4, "input": b, "inputs": {"files": []}}}
    assert unit_layout([report], [source])[0].tolist() == [0, 5, 9]
    grown = {"0": dict(report["0"], documents=6, inputs=None)}
    with pytest.raises(StageError, match=rf"{a}: two document tasks found 5 and 6 documents in it"):
        unit_layout([report, grown], [source])
    # a file added before b.txt between two tasks: input 1 is another file, with as many documents
    shifted = {"1": dict(report["1"], input=str(tmp_path / "a2.txt"), inputs=None)}
    with pytest.raises(StageError, match=r"different inputs as input 1 \(.*b.txt and .*a2.txt\)"):
        unit_layout([report, shifted], [source])
    with pytest.raises(StageError, match=r"cover 1 of the 2 inputs \(none for input 1\)"):  # the last one missing
        unit_layout([{"0": report["0"]}], [source])
    with pytest.raises(StageError, match=r"cover 2 of the 2 inputs"):  # no task led input 1
        unit_layout([{"0": report["0"], "1": dict(report["1"], inputs=None)}], [source])
