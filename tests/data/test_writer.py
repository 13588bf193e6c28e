"""The shuffled split writer (tonsai.data.writer): its order depends only on the seed and the ids;
its files are read through datasets' public API (tonsai.data.prepared.load_splits, load_dataset)."""

import datasets

from tonsai.data.prepared import load_splits
from tonsai.data.writer import ShuffledSplitWriter


def test_shuffled_writer_order_depends_only_on_seed_and_ids(tmp_path):
    rows = [(f"text {i}", "en", "s", f"id{i}") for i in range(50)]

    def write(name, items, buckets):
        w = ShuffledSplitWriter(tmp_path / name / "train", tmp_path / f"tmp-{name}", seed=7, num_buckets=buckets)
        for r in items:
            w.add(*r)
        assert w.finish() == 50
        assert not (tmp_path / f"tmp-{name}").exists()
        return load_splits(tmp_path / name)["train"]

    a = write("a", rows, 3)
    b = write("b", rows[::-1], 3)
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == [
        f"data-0000{k}-of-00003.arrow" for k in range(3)]  # the split's files and nothing private to datasets
    assert a["id"] == b["id"] and sorted(a["id"]) == sorted(r[3] for r in rows)
    assert a["id"] != [r[3] for r in rows]  # shuffled
    assert a.column_names == ["text", "lang", "source", "id"]


def test_the_written_splits_load_with_load_dataset_arrow_as_with_load_splits(tmp_path):
    for split, n in (("train", 40), ("validation", 7)):
        w = ShuffledSplitWriter(tmp_path / "dataset" / split, tmp_path / f"tmp-{split}", seed=3, num_buckets=2)
        for i in range(n):
            w.add(f"{split} ភាសាខ្មែរ {i}", "km", "s", f"{split}{i}")
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
