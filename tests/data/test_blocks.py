"""tonsai.data.blocks outside the prepare stage: the writer's effect on the process."""

import gc

import pyarrow.parquet as pq
import pytest
from datatrove.data import Document

from tonsai.data.blocks import DedupKeys, KeyedDocsWriter


def _docs(n: int, seen: list, fail_at: int | None = None):
    for i in range(n):
        seen.append(gc.get_threshold())
        if i == fail_at:
            raise RuntimeError("reader broke on purpose")
        yield Document(text=f"document number {i} with some words", id=str(i),
                       metadata={"source": "s", "src": 0, "order": i})


def _write(tmp_path, docs):
    writer = KeyedDocsWriter(str(tmp_path / "docs"), bands=16)
    for _ in writer.run(DedupKeys().run(docs)):
        pass


def test_the_writer_collects_garbage_less_often_while_documents_stream(tmp_path):
    before, seen = gc.get_threshold(), []
    _write(tmp_path, _docs(5, seen))
    assert {t[0] for t in seen} == {50_000}  # the whole pipeline ran under the writer's setting
    assert gc.get_threshold() == before
    assert pq.read_table(tmp_path / "docs" / "00000.parquet").num_rows == 5


def test_the_collector_setting_is_restored_when_the_pipeline_fails(tmp_path):
    before, seen = gc.get_threshold(), []
    with pytest.raises(RuntimeError, match="on purpose"):
        _write(tmp_path, _docs(5, seen, fail_at=3))
    assert gc.get_threshold() == before
    assert not (tmp_path / "docs" / "00000.parquet").exists()
