"""The shuffled split writer (tonsai.data.writer): its order depends only on the seed and the ids;
its files are read through datasets' public API (tonsai.data.prepared.load_splits, load_dataset)."""

import datasets
import pyarrow as pa

from tonsai.data.prepared import load_splits
from tonsai.data.writer import SCHEMA, ShuffledSplitWriter


def table_of(rows):
    return pa.Table.from_arrays([pa.array([r[k] for r in rows], type=pa.string()) for k in range(4)], schema=SCHEMA)


def test_shuffled_writer_order_depends_only_on_seed_and_ids(tmp_path):
    rows = [(f"text {i} ខ្មែរ", "en", "s", f"id{i}") for i in range(50)]

    def write(name, tables, buckets):
        w = ShuffledSplitWriter(tmp_path / name / "train", tmp_path / f"tmp-{name}", seed=7, num_buckets=buckets)
        for t in tables:
            w.add_table(t)
        assert w.finish() == 50
        assert not (tmp_path / f"tmp-{name}").exists()
        return load_splits(tmp_path / name)["train"]

    a = write("a", [table_of(rows)], 3)
    b = write("b", [table_of([r]) for r in rows[::-1]], 3)  # another order, a table per row
    c = write("c", [table_of(rows[:7]), table_of(rows[7:7]), table_of(rows[7:])], 1)
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == [
        f"data-0000{k}-of-00003.arrow" for k in range(3)]  # the split's files and nothing private to datasets
    assert a.to_list() == b.to_list() and sorted(a["id"]) == sorted(r[3] for r in rows)
    assert sorted(a.to_list(), key=lambda r: r["id"]) == sorted(c.to_list(), key=lambda r: r["id"])
    assert a["id"] != [r[3] for r in rows]  # shuffled
    assert a.column_names == ["text", "lang", "source", "id"]


def test_copies_of_a_document_are_placed_by_their_own_keys(tmp_path):
    """Copy c of a document is shuffled by the key of (id, c): copies spread apart, and a split
    with many buckets, filled in small tables, flushes each bucket and keeps every row."""
    rows = [(f"doc {i}", "km", "s", f"d{i}") for i in range(300)]
    w = ShuffledSplitWriter(tmp_path / "out" / "train", tmp_path / "tmp", seed=1, num_buckets=40)
    for lo in range(0, 300, 25):
        part = rows[lo:lo + 25]
        w.add_table(table_of([r for r in part for _ in range(2)]), [c for _ in part for c in range(2)])
    assert w.finish() == 600
    ds = load_splits(tmp_path / "out")["train"]
    seen = {}
    for pos, doc_id in enumerate(ds["id"]):
        seen.setdefault(doc_id, []).append(pos)
    assert len(seen) == 300 and all(len(p) == 2 for p in seen.values())
    by_key = sorted((w.key(f"d{i}", c) % 40, w.key(f"d{i}", c), f"d{i}") for i in range(300) for c in range(2))
    assert [k for _, _, k in by_key] == ds["id"]  # bucket by bucket, each sorted by key


def test_the_written_splits_load_with_load_dataset_arrow_as_with_load_splits(tmp_path):
    for split, n in (("train", 40), ("validation", 7)):
        w = ShuffledSplitWriter(tmp_path / "dataset" / split, tmp_path / f"tmp-{split}", seed=3, num_buckets=2)
        w.add_table(table_of([(f"{split} ភាសាខ្មែរ {i}", "km", "s", f"{split}{i}") for i in range(n)]))
        w.finish()
    ours = load_splits(tmp_path / "dataset")
    theirs = datasets.load_dataset("arrow", data_dir=str(tmp_path / "dataset"), cache_dir=str(tmp_path / "cache"))
    assert sorted(ours) == sorted(theirs) == ["train", "validation"]
    for split in ours:
        assert ours[split].to_list() == theirs[split].to_list() and len(ours[split]) in (40, 7)


def test_an_empty_split_loads_as_zero_rows(tmp_path):
    w = ShuffledSplitWriter(tmp_path / "dataset" / "validation", tmp_path / "tmp", seed=3, num_buckets=1)
    assert w.finish() == 0
    ds = load_splits(tmp_path / "dataset")["validation"]
    assert len(ds) == 0 and ds.column_names == ["text", "lang", "source", "id"]


def test_rows_picked_by_number_equal_the_table_taken_first(tmp_path):
    """add_table(table, copies, rows=...) picks and orders rows in one take: the split is the one
    written from the table with those rows taken out first."""
    import numpy as np

    rows = [(f"doc {i} ភាសា", "km", "s", f"d{i}") for i in range(40)]
    picked = np.array([3, 3, 0, 17, 39, 17, 17, 5])
    copies = [0, 1, 0, 0, 0, 1, 2, 0]
    out = []
    for name, args in (("taken", (table_of([rows[i] for i in picked]), copies)),
                       ("rows", (table_of(rows), copies, picked))):
        w = ShuffledSplitWriter(tmp_path / name / "train", tmp_path / f"tmp-{name}", seed=4, num_buckets=3)
        w.add_table(*args)
        assert w.finish() == len(picked)
        out.append(load_splits(tmp_path / name)["train"].to_list())
    assert out[0] == out[1] and len(out[0]) == 8
