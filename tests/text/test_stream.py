import io
import subprocess
import sys

import pytest

from tonsai.errors import StageError
from tonsai.text import normalize
from tonsai.text.stream import NormalizeTextConfig, normalize_chunks, run_normalize_text

from ..conftest import REPO

MESSY = "ក\u200bខ\u17d2\u178a\r\nHello\u00a0world\u2028ប្រទេស\u00adកម្ពុជា \ufeffcafÃ©\n" * 7


@pytest.mark.parametrize("chunk", [16, 17, 50, 1 << 20])
def test_chunked_equals_whole(chunk):
    assert "".join(normalize_chunks(io.StringIO(MESSY, newline=""), chunk)) == normalize(MESSY)


def test_long_line_without_newline_streams_in_pieces():
    line = ("ប្រទេសកម្ពុជា " * 5000).strip()
    pieces = list(normalize_chunks(io.StringIO(line), 1024))
    assert len(pieces) > 10
    assert "".join(pieces) == normalize(line)


def test_files_and_folders(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text(MESSY, encoding="utf-8", newline="")
    (src / "sub" / "b.txt").write_text("x\u00a0y\n", encoding="utf-8")
    run_normalize_text(NormalizeTextConfig(inputs=[str(src)], output=str(tmp_path / "out")))
    assert (tmp_path / "out" / "a.txt").read_text(encoding="utf-8", errors="strict") == normalize(MESSY)
    assert (tmp_path / "out" / "sub" / "b.txt").read_text(encoding="utf-8") == "x y\n"
    run_normalize_text(NormalizeTextConfig(inputs=[str(src / "a.txt")], output=str(tmp_path / "one.txt")))
    assert (tmp_path / "one.txt").read_bytes() == normalize(MESSY).encode("utf-8")
    with pytest.raises(StageError, match="no such file"):
        run_normalize_text(NormalizeTextConfig(inputs=[str(tmp_path / "missing")], output="-"))


def test_invalid_utf8_strict_names_the_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(StageError, match="bad.txt: invalid UTF-8"):
        run_normalize_text(NormalizeTextConfig(inputs=[str(bad)], output=str(tmp_path / "o.txt"), errors="strict"))
    assert not (tmp_path / "o.txt").exists()


def test_stdin_to_stdout():
    proc = subprocess.run([sys.executable, str(REPO / "scripts/normalize_text.py")], input=MESSY.encode(),
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode("utf-8") == normalize(MESSY)
