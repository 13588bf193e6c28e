"""Arrow columns built from buffers equal pyarrow's own, and the prepare stage runs without pandas."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from tests.data.corpus import EN, KM, REPO, write_lines
from tonsai.data import columns

STRINGS = ["ព្រះរាជាណាចក្រកម្ពុជា", "", "plain ASCII", "mixed ខ្មែរ and «quotes» 𝔘", "\x00 nul inside"]
NUMBERS = {pa.int32(): [0, -2**31, 2**31 - 1], pa.int64(): [0, -2**63, 2**63 - 1, 7],
           pa.uint64(): [0, 2**64 - 1, 2**63], pa.uint16(): [65535, 0], pa.float64(): [0.5, -1e300]}


def test_a_string_array_equals_pyarrows():
    got = columns.array(STRINGS, pa.string())
    assert got.equals(pa.array(STRINGS, type=pa.string()))
    assert got.to_pylist() == STRINGS
    assert columns.array([], pa.string()).equals(pa.array([], type=pa.string()))


def test_a_lone_surrogate_is_refused_as_pyarrow_refuses_it():
    with pytest.raises(UnicodeEncodeError):
        columns.array(["a\ud800b"], pa.string())
    with pytest.raises(UnicodeEncodeError):
        pa.array(["a\ud800b"], type=pa.string())


@pytest.mark.parametrize("type_", list(NUMBERS), ids=str)
def test_a_number_array_equals_pyarrows_from_a_list_and_from_numpy(type_):
    values = NUMBERS[type_]
    expected = pa.array(values, type=type_)
    assert columns.array(values, type_).equals(expected)
    assert columns.array(np.array(values, dtype=type_.to_pandas_dtype()), type_).equals(expected)
    assert columns.to_numpy(expected).tolist() == values


def test_a_value_out_of_range_is_refused():
    with pytest.raises(OverflowError):
        columns.array([-1], pa.uint64())
    for values, type_ in ((np.array([-1]), pa.uint64()), (np.array([1.7]), pa.int64())):  # not cast silently
        with pytest.raises(pa.ArrowInvalid):
            columns.array(values, type_)


def test_other_types_go_through_pyarrow():
    assert columns.array([True, False], pa.bool_()).equals(pa.array([True, False]))
    with_null = pa.array([1, None, 3], type=pa.int64())
    got = columns.to_numpy(with_null)  # pyarrow's own conversion: floats, NaN for the null
    assert got[0] == 1 and np.isnan(got[1])
    assert np.isnan(columns.to_numpy(pa.chunked_array([with_null]))[1])


def test_to_numpy_reads_sliced_and_chunked_columns():
    a = pa.array(np.arange(10, dtype=np.int64))
    assert columns.to_numpy(a.slice(3, 4)).tolist() == [3, 4, 5, 6]
    chunked = pa.chunked_array([a.slice(0, 2), a.slice(2, 0), a.slice(8, 2)])
    assert columns.to_numpy(chunked).tolist() == [0, 1, 8, 9]
    assert columns.to_numpy(pa.chunked_array([], type=pa.uint64())).dtype == np.uint64
    view = columns.to_numpy(a)
    assert not view.flags.writeable  # a view of Arrow's buffer, as Array.to_numpy gives


def test_a_table_equals_pa_table():
    schema = pa.schema([("text", pa.string()), ("key", pa.uint64()), ("src", pa.int32())])
    cols = {"text": ["ក", "b"], "key": [2**64 - 1, 0], "src": [1, 2]}
    assert columns.table(cols, schema).equals(pa.table(cols, schema=schema))


@pytest.mark.parametrize("workers", [1, 2])
def test_the_prepare_stage_never_imports_pandas(tmp_path, workers):
    """pyarrow imports pandas for its first pa.array, pa.table or to_numpy: 0.3 s and about 40 MB
    in each process that writes or reads a column. A pandas import in the stage or in any of its
    task processes fails this test."""
    km, en = write_lines(tmp_path / "km.txt", KM), write_lines(tmp_path / "en.txt", EN)
    guard = tmp_path / "guard"
    guard.mkdir()
    # sitecustomize runs in every Python process of the run (the fork server's too, and forked
    # children keep its finder): each import of pandas is written down with the importing pid
    (guard / "sitecustomize.py").write_text(
        "import os, sys\n"
        "class _Seen:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pandas':\n"
        "            open(os.environ['PANDAS_SEEN'], 'a').write(f'{os.getpid()}\\n')\n"
        "sys.meta_path.insert(0, _Seen())\n", encoding="utf-8")
    seen = tmp_path / "pandas_seen.txt"
    env = {**os.environ, "PYTHONPATH": f"{guard}:{REPO}", "PANDAS_SEEN": str(seen)}
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_dataset.py"), "--khmer", km, "--english", en,
                        "--output-dir", str(tmp_path / "out"), "--num-proc", str(workers),
                        "--min-validation-docs", "1"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert not seen.exists(), f"pandas was imported by processes {seen.read_text().split()}"
