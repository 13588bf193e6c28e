"""Reading line-aligned translations: two text files where line n of one translates line n of the
other (FLORES-200, NTREX-128, the sample corpus). The one reader behind the tokenizer's parity
report (--parity-file), evaluation's bits per sentence (--parallel) and the aligned-pairs benchmark
loader, so all three refuse the same bad inputs with the same messages."""

from __future__ import annotations

from pathlib import Path

from tonsai.data.sources import binary_reason
from tonsai.errors import StageError


def check_text_file(path: str | Path, flag: str) -> Path:
    """``path``, refused (a StageError naming ``flag`` and the file) when it is missing or looks binary;
    reads only a sample, so it suits checks made before a model loads."""
    p = Path(path)
    if not p.is_file():
        raise StageError(f"{flag}: {p} is not a file")
    reason = binary_reason(p)
    if reason:
        raise StageError(f"{flag}: {p} does not look like text ({reason}); give a UTF-8 text file")
    return p


def read_lines(path: str | Path, flag: str) -> list[str]:
    """The lines of a UTF-8 text file; a missing, binary-looking or non-UTF-8 file is a StageError
    naming ``flag`` and the file."""
    p = check_text_file(path, flag)
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise StageError(f"{flag}: {p} is not UTF-8 ({e}); convert it first") from e


def read_aligned(first: str | Path, second: str | Path, flag: str,
                 names: tuple[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The lines of two aligned files, checked to be equally many. ``names`` (default the paths)
    label the two sides in the error."""
    a, b = read_lines(first, flag), read_lines(second, flag)
    if len(a) != len(b):
        na, nb = names or (str(first), str(second))
        raise StageError(f"{flag}: {na} has {len(a)} lines but {nb} has {len(b)}; the files must be "
                         f"line-aligned translations of each other (the same number of lines)")
    return a, b
