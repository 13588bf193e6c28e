"""The shuffled split writer (tonsai.data.writer): its order depends only on the seed and the ids."""


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
