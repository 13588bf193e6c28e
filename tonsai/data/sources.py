"""Reading raw documents from local files and Hugging Face datasets, streamed.

A source is a path (file, folder or glob) or a Hub dataset declared as Khmer or English, with its
own mixing weight. Supported inputs:

- ``.txt``: one document per line (``doc_mode="line"``, the default) or per block separated by
  blank lines (``doc_mode="paragraph"``);
- ``.jsonl`` / ``.json``: one JSON object per line with a text field (``text_column``); a ``.json``
  file that starts with ``[`` is one JSON array of such objects (loaded whole: use JSON lines for
  big files). Both may be compressed: ``.gz`` or ``.zst`` after the suffix;
- ``.parquet``: read in record batches of the text column only;
- ``.arrow``: an Arrow stream file (a split folder of a prepared dataset holds these), read batch
  by batch;
- a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose
  split is chosen with ``split``): its Arrow files are read batch by batch, never memory-mapped;
- ``hf:NAME[:CONFIG[:SPLIT]]``: a dataset loaded with
  ``datasets.load_dataset(NAME, CONFIG, split=SPLIT, streaming=True)``, e.g.
  ``hf:HuggingFaceFW/fineweb-2:khm_Khmr:train``; NAME may also be a local folder of
  parquet/json files (the same streaming code path, used by the offline tests).

Every document gets a stable id, ``<source name>:<file>:<line>`` (``<source>:<split>:<row>`` for
Hub datasets and Arrow/Parquet rows), that the deterministic validation split, sharding and
deduplication rely on. Invalid UTF-8 is decoded with U+FFFD replacements and counted, so it is never
lost silently; ``invalid_utf8="skip"`` drops such documents instead (counted as a reason).
A bad JSON record stops the run with its file:line, or with ``bad_records="skip"`` is counted by
kind (``dropped:malformed_json``, ``not_an_object``, ``missing_text_field``, ``text_not_a_string``)
with its first locations kept for the manifest.

Inputs are read completely or not at all: a truncated ``.gz``, ``.zst`` or Parquet file is an error
naming the file, never a silent partial read (``--bad-records skip`` does not cover it). The
``zstandard`` package's stream readers return what they decoded and stop when a file ends inside a
frame, so :class:`_ZstdReader` drives one ``decompressobj`` per frame and checks that the last one
ended. An Arrow stream file cut between two record batches reads without error too: its missing
end-of-stream marker gives it away.
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import gzip
import io
import json
import logging
import math
import re
import zlib
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zstandard

from tonsai.configfile import check_fields, did_you_mean, unknown_keys_message
from tonsai.data import columns
from tonsai.errors import StageError
from tonsai.manifest import file_sha256

# datasets (0.8 s to import) and huggingface_hub's HfApi (0.2 s) are imported inside the functions
# that read a saved dataset or a Hub stream: most sources are files, and every document task imports
# this module.
log = logging.getLogger(__name__)
TEXT_SUFFIXES = {".txt"}
JSON_SUFFIXES = {".jsonl", ".json"}
PARQUET_SUFFIXES = {".parquet"}
ARROW_SUFFIXES = {".arrow"}  # Arrow stream files, as the prepare stage and save_to_disk write them
COMPRESSED = {".gz", ".zst"}
HF_PREFIX = "hf:"
MAX_LOCATIONS = 20  # locations of skipped records kept per source for the manifest


@dataclasses.dataclass
class Document:
    id: str
    text: str
    lang: str
    source: str
    location: str  # file:line, for messages
    skip_reason: str | None = None  # set by the reader: invalid_utf8 (skip mode) or malformed_json


LANGS = ("km", "en")


@dataclasses.dataclass
class Source:
    """One input declared by the user: a path or ``hf:`` name and the language it should hold.

    ``weight`` is the source's share inside its language (normalized over the language's sources);
    ``None`` means "in proportion to its available characters" (the natural share).
    """

    path: str
    lang: str
    name: str = ""
    weight: float | None = None
    max_epochs: float | None = None  # None: the stage's --max-epochs
    text_column: str | None = None  # None: the stage's --text-column
    split: str | None = None  # Hub datasets and DatasetDict folders; default "train"
    revision: str | None = None  # Hub datasets: a commit sha, branch or tag to pin every shard to

    def __post_init__(self) -> None:
        if not self.name:
            base = self.path[len(HF_PREFIX):].rstrip("/") if self.is_hub else self.path.rstrip("/")
            self.name = f"{self.lang}:{Path(base).name or base}"
        if self.weight is not None and not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"source {self.name}: weight {self.weight} must be >= 0 and finite")
        if self.max_epochs is not None and not (math.isfinite(self.max_epochs) and self.max_epochs > 0):
            raise ValueError(f"source {self.name}: max_epochs {self.max_epochs} must be > 0 and finite")
        if self.revision is not None and not self.is_hub:
            raise ValueError(f"source {self.name}: revision applies to hf: sources only")

    @property
    def is_hub(self) -> bool:
        return self.path.startswith(HF_PREFIX)

    def hub_args(self) -> tuple[str, str | None, str]:
        """(name, config, split) of an ``hf:`` source."""
        parts = self.path[len(HF_PREFIX):].split(":")
        if not parts[0] or len(parts) > 3:
            raise StageError(f"{self.path}: expected hf:NAME[:CONFIG[:SPLIT]]")
        name = parts[0]
        config = parts[1] if len(parts) > 1 and parts[1] else None
        split = parts[2] if len(parts) > 2 and parts[2] else (self.split or "train")
        return name, config, split

    def files(self) -> list[Path]:
        """The files (or save_to_disk folders) of a local source, sorted; errors when there are none."""
        if self.is_hub:
            return []
        p = Path(self.path)
        if any(ch in self.path for ch in "*?["):
            found = sorted(Path(x) for x in glob.glob(self.path, recursive=True))
        elif p.is_dir():
            if _is_saved_dataset(p):
                return [p]
            found = sorted(x for x in p.rglob("*") if x.is_file() or _is_saved_dataset(x))
        elif p.is_file():
            if file_kind(p) is None:
                columnar = (p.suffix in COMPRESSED and len(p.suffixes) > 1
                            and p.suffixes[-2] in PARQUET_SUFFIXES | ARROW_SUFFIXES)
                raise StageError(f"{self.lang} source {self.path}: " + (
                    "Parquet and Arrow files are compressed inside, not as a whole file: decompress it first"
                    if columnar else "unsupported file type (use .txt, .jsonl or .json, each optionally .gz or "
                                     ".zst; .parquet; .arrow)"))
            return [p]
        else:
            origin = getattr(self, "origin", None)
            raise StageError(f"{self.lang} source {self.path}: no such file or folder" + (
                f" (from {origin}; its relative paths are relative to the folder the command runs in, here "
                f"{Path.cwd()}, not to the mix file)" if origin else ""))
        skipped = [x for x in found if x.is_file() and file_kind(x) is None and not x.name.startswith(".")]
        if skipped and self.path not in _WARNED_SKIPS:
            _WARNED_SKIPS.add(self.path)
            log.warning("%s source %s: %d file(s) of a type prepare does not read are left out: %s%s", self.lang,
                        self.path, len(skipped), ", ".join(x.name for x in skipped[:5]),
                        ", ..." if len(skipped) > 5 else "")
        found = [x for x in found if file_kind(x) is not None]
        # a saved dataset's own .arrow/.json files are not separate inputs
        saved = [x for x in found if x.is_dir()]
        found = [x for x in found if not any(s in x.parents for s in saved)]
        if not found:
            raise StageError(f"{self.lang} source {self.path}: no .txt, .jsonl, .json, .parquet, .arrow files "
                             f"or save_to_disk folders found there")
        return found


_WARNED_SKIPS: set[str] = set()  # sources whose left-out files were named once already


def _is_saved_dataset(p: Path) -> bool:
    return p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file())


def file_kind(p: Path) -> str | None:
    if _is_saved_dataset(p):
        return "saved"
    if p.is_dir():
        return None
    suffixes = p.suffixes[-2:]
    last = suffixes[-1] if suffixes else ""
    if last in COMPRESSED:
        last = suffixes[0] if len(suffixes) == 2 else ""
        if last in PARQUET_SUFFIXES or last in ARROW_SUFFIXES:  # columnar files are not compressed whole
            return None
    if last in TEXT_SUFFIXES:
        return "txt"
    if last in JSON_SUFFIXES:
        return "json"
    if last in PARQUET_SUFFIXES:
        return "parquet"
    if last in ARROW_SUFFIXES:
        return "arrow"
    return None


class TruncatedInput(EOFError):
    """A compressed input ends inside a frame or member."""


class _ZstdReader(io.RawIOBase):
    """The decompressed bytes of a .zst file (one frame or several, concatenated) that raises
    :class:`TruncatedInput` when the file ends inside a frame. Input is fed 64 KB at a time."""

    def __init__(self, path: Path):
        self._file = open(path, "rb")
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None  # decompressobj of the frame being read
        self._out = memoryview(b"")  # decompressed bytes not yet returned
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._out:
            chunk = self._file.read(1 << 16)
            if not chunk:
                if self._frame is not None and not self._frame.eof:
                    raise TruncatedInput(f"{self._path}: truncated .zst stream (ends inside a frame) — "
                                         f"re-download or re-compress it")
                return 0
            self._out = memoryview(self._feed(chunk))
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame is None or self._frame.eof:
                self._frame = self._dctx.decompressobj()
            try:
                out.append(self._frame.decompress(data))
            except zstandard.ZstdError as e:
                raise OSError(f"damaged .zst data: {e}") from e
            data = self._frame.unused_data if self._frame.eof else b""
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()


def open_binary(path: Path) -> IO[bytes]:
    """Open a possibly .gz/.zst-compressed file for streaming binary reads. Reading a truncated
    compressed file raises :class:`EOFError` at its end (gzip's own, or :class:`TruncatedInput`)."""
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        if path.suffix == ".zst":
            return io.BufferedReader(_ZstdReader(path))
        return open(path, "rb")
    except PermissionError as e:
        raise StageError(f"{path}: cannot read ({e.strerror}); check its permissions") from e


def read_error(path: Path, e: Exception) -> StageError:
    """The user-facing error for an input that cannot be read to its end."""
    if isinstance(e, PermissionError):
        return StageError(f"{path}: cannot read ({e.strerror}); check its permissions")
    if isinstance(e, TruncatedInput):
        return StageError(str(e))
    if isinstance(e, EOFError):
        return StageError(f"{path}: truncated {path.suffix} stream ({e}) — re-download or re-compress it")
    return StageError(f"{path}: cannot read ({type(e).__name__}: {e}); the file may be damaged or not what "
                      f"its suffix says")


def binary_reason(path: Path, size: int = 1 << 16) -> str | None:
    """Why ``path`` (decompressed) looks like a binary file rather than text, or None: it holds NUL
    bytes, or more than a tenth of its first ``size`` bytes are not valid UTF-8."""
    try:
        with open_binary(path) as f:
            head = f.read(size)
    except (OSError, EOFError, zlib.error) as e:
        raise read_error(path, e) from e
    if b"\x00" in head:
        return "it holds NUL bytes: a binary file, or UTF-16/32 text to convert to UTF-8"
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=False)
    invalid = text.count("\ufffd") - head.count("\ufffd".encode())
    if invalid > 0.1 * max(1, len(text)):
        return f"{invalid} of its first {len(text)} characters are not valid UTF-8"
    return None


@dataclasses.dataclass
class ReadStats:
    documents: int = 0
    bytes: int = 0  # UTF-8 bytes of the documents' text as read (before normalization)
    invalid_utf8_lines: int = 0
    malformed_records: int = 0  # skipped bad records of every kind
    locations: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # kind -> first locations

    # JSON files read by one of several tasks: path -> [records with the text field, the error for a
    # file without it (from the first record lacking it) or None]; the merge decides on the whole file
    text_fields: dict[str, list] = dataclasses.field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.malformed_records += 1
        seen = self.locations.setdefault(reason, [])
        if len(seen) < MAX_LOCATIONS:
            seen.append(where)


PERIOD_BITS = 12
PERIOD = 1 << PERIOD_BITS
# position p's place in a period: its low bits reversed (van der Corput), so that any run of
# consecutive positions falls evenly into the parts: with two equal parts, even and odd positions
_SPREAD = np.array([int(f"{i:0{PERIOD_BITS}b}"[::-1], 2) for i in range(PERIOD)], dtype=np.int64)
_SPREAD_LIST = _SPREAD.tolist()


@dataclasses.dataclass
class Share:
    """The documents of one input (a file, or a source read file after file) that one task reads:
    those whose position ``p`` has its place in the period, ``SPREAD(p % PERIOD)``, in ``[lo, hi)``
    (a position counts every document of the input, in order; ``pos`` is the last one considered,
    the yielded document's while the consumer holds it). The places spread consecutive positions
    evenly, so a part of ``(hi - lo) / PERIOD`` gets that share of any run of documents, a short
    file's too. A Parquet file's part is a run of rows instead (:meth:`rows`), so that a task reads
    only its row groups. :func:`tonsai.data.sharding.task_units` gives each task its part of the inputs
    that several tasks share. The other documents are only found, never decoded, parsed or
    counted, so each task's reading costs little more than its share: on the 10x corpus, finding
    every line of the ten .jsonl.zst files takes 0.2 s, decoding and parsing them as documents
    2.3 s. Each task counts the bytes, invalid UTF-8 lines and bad records of its own documents;
    the merge adds them up."""

    lo: int = 0
    hi: int = PERIOD
    pos: int = -1

    def __post_init__(self) -> None:
        self.whole = self.lo <= 0 and self.hi >= PERIOD  # every document: nothing to skip

    @classmethod
    def of(cls, rank: int, world: int) -> "Share":
        """The ``rank``-th of ``world`` equal parts."""
        return cls(PERIOD * rank // world, PERIOD * (rank + 1) // world)

    def next(self) -> bool:
        """Move to the next document; whether it is this task's."""
        self.pos += 1
        return self.whole or self.lo <= _SPREAD_LIST[self.pos & (PERIOD - 1)] < self.hi

    def rows(self, n: int) -> tuple[int, int]:
        """This task's part of an input whose ``n`` documents are known before reading (a Parquet
        file's footer counts its rows): the run of rows ``[a, b)``; the parts of all tasks tile it."""
        return n * self.lo // PERIOD, n * self.hi // PERIOD

    def owned(self, first: int, n: int) -> np.ndarray:
        """The offsets (from ``first``) of this task's positions among ``first .. first + n - 1``."""
        place = _SPREAD[np.arange(first, first + n, dtype=np.int64) & (PERIOD - 1)]
        return np.flatnonzero((place >= self.lo) & (place < self.hi))


_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]")


def _own_line(raw: bytes, share: Share, stats: ReadStats) -> tuple[str, bool] | None:
    """(text, invalid UTF-8) of a line that is one of this task's documents; None for a blank line
    or another task's. A task that reads every document decodes every line anyway and decides on
    the text."""
    if share.whole:
        line, invalid = _decode(raw, stats)
        if not line.strip():
            return None
        share.next()
        return line, invalid
    if _blank(raw) or not share.next():
        return None
    return _decode(raw, stats)


def _blank(raw: bytes) -> bool:
    """Whether a line is blank once decoded (``str.strip`` leaves nothing), deciding from the bytes
    where they settle it: visible ASCII or a Khmer letter (U+1780..U+17FF) is never whitespace."""
    s = raw.strip()
    if not s:
        return True
    if _VISIBLE_ASCII.search(s) or b"\xe1\x9e" in s or b"\xe1\x9f" in s:
        return False
    return not s.decode("utf-8", errors="replace").strip()


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    doc_mode: str = "line"
    text_column: str = "text"
    invalid_utf8: str = "replace"  # or "skip"
    bad_records: str = "error"  # or "skip"


def _decode(raw: bytes, stats: ReadStats) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        stats.invalid_utf8_lines += 1
        return raw.decode("utf-8", errors="replace"), True


def iter_documents(source: Source, stats: ReadStats, doc_mode: str = "line",
                   text_column: str = "text", options: ReadOptions | None = None,
                   share: Share | None = None) -> Iterator[Document]:
    """Yield the documents of ``source`` (with ``share``, only that task's: :class:`Share`, whose
    positions run on across the source's files), streaming each file (bounded memory except .json
    arrays)."""
    opts = options or ReadOptions(doc_mode=doc_mode, text_column=text_column)
    share = share or Share()
    for path in source.files() or [None]:
        yield from iter_unit(source, path, stats, opts, share)


def iter_unit(source: Source, path: Path | None, stats: ReadStats, options: ReadOptions,
              share: Share) -> Iterator[Document]:
    """The documents of one file (or save_to_disk folder) of ``source``, or its Hub stream when
    ``path`` is None, that ``share`` takes."""
    opts = dataclasses.replace(options, text_column=source.text_column or options.text_column)
    if path is None:
        yield from _iter_hub(source, stats, opts, share)
        return
    kind = file_kind(path)
    rel = path.name
    try:
        if kind == "json":
            yield from _iter_json(path, rel, source, stats, opts, share)
        elif kind == "parquet":
            yield from _iter_parquet(path, rel, source, stats, opts, share)
        elif kind == "saved":
            yield from _iter_saved(path, rel, source, stats, opts, share)
        elif kind == "arrow":
            yield from _iter_arrow([path], path, rel, source, stats, opts, share)
        else:
            yield from _iter_txt(path, rel, source, stats, opts, share)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise read_error(path, e) from e


def _doc(source: Source, rel: str, n: int | str, text: str, where: str, bad_utf8: bool,
         opts: ReadOptions, stats: ReadStats) -> Document:
    stats.documents += 1
    stats.bytes += len(text.encode("utf-8", errors="replace"))
    reason = "invalid_utf8" if bad_utf8 and opts.invalid_utf8 == "skip" else None
    return Document(f"{source.name}:{rel}:{n}", text, source.lang, source.name, where, reason)


def _iter_txt(path: Path, rel: str, source: Source, stats: ReadStats, opts: ReadOptions,
              share: Share) -> Iterator[Document]:
    with open_binary(path) as f:
        if opts.doc_mode == "line":
            for lineno, raw in enumerate(f, 1):
                if (own := _own_line(raw, share, stats)) is not None:
                    yield _doc(source, rel, lineno, own[0].rstrip("\r\n"), f"{path}:{lineno}", own[1], opts, stats)
            return
        buf: list[str] = []  # the lines of this task's paragraph
        inside = own = bad = False
        start = 0
        for lineno, raw in enumerate(f, 1):
            if _blank(raw):
                if inside and own:
                    yield _doc(source, rel, start, "\n".join(buf), f"{path}:{start}", bad, opts, stats)
                inside, buf = False, []
                continue
            if not inside:
                inside, own, start, bad = True, share.next(), lineno, False
            if own:
                line, invalid = _decode(raw, stats)
                buf.append(line.rstrip("\r\n"))
                bad = bad or invalid
        if inside and own:
            yield _doc(source, rel, start, "\n".join(buf), f"{path}:{start}", bad, opts, stats)


JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
                   bool: "a boolean", type(None): "null"}
SKIP_HINT = "or pass --bad-records skip to count and skip such records"


class BadRecord(ValueError):
    """One JSON record that cannot give a document; ``reason`` names its kind for the counts."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _record_text(obj, where: str, opts: ReadOptions) -> str:
    col = opts.text_column
    if not isinstance(obj, dict):
        raise BadRecord("not_an_object", f"{where}: the record is {JSON_TYPE_NAMES.get(type(obj), 'a value')}, "
                                         f"not an object with a {col!r} field; fix or remove it, {SKIP_HINT}")
    if col not in obj:
        raise BadRecord("missing_text_field", f"{where}: no {col!r} field (found {sorted(obj)}); pass "
                                              f"--text-column with one of these, {SKIP_HINT}")
    text = obj[col]
    if not isinstance(text, str):
        raise BadRecord("text_not_a_string", f"{where}: field {col!r} is {JSON_TYPE_NAMES.get(type(text), 'a value')}"
                                             f", not a string; fix or remove the record, {SKIP_HINT}")
    return text


def _bad_record(e: BadRecord, source: Source, rel: str, n: int, where: str, opts: ReadOptions,
                stats: ReadStats) -> Document:
    """With ``--bad-records skip``: count the record by kind and return it as a dropped document."""
    if opts.bad_records != "skip":
        raise StageError(str(e)) from e
    stats.skip(e.reason, where)
    d = _doc(source, rel, n, "", where, False, opts, stats)
    d.skip_reason = e.reason
    return d


UTF8_BOM = b"\xef\xbb\xbf"


def json_records(f: IO[bytes], path: Path, stats: ReadStats,
                 share: Share | None = None) -> Iterator[tuple[int, str, object, bool]]:
    """(record number, location, parsed value or a :class:`BadRecord`, invalid UTF-8) for each record
    of a JSON array file or a JSON-lines file (with ``share``, each of that task's records)."""
    share = share or Share()
    head = f.peek(64)[:64] if hasattr(f, "peek") else b""
    if head.startswith(UTF8_BOM):  # Windows tools write one; json.loads refuses it
        f.read(len(UTF8_BOM))
        head = head[len(UTF8_BOM):]
    if head.lstrip()[:1] == b"[":
        # an array is decoded whole by every task that reads it; the one with part 0 counts its invalid UTF-8
        text, invalid = _decode(f.read(), stats if share.lo == 0 else ReadStats())
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:  # the whole file is one value: nothing to skip
            raise StageError(f"{path}:{e.lineno}: malformed JSON ({_json_error(e)}); fix the file") from e
        for i, obj in enumerate(records):
            if share.next():
                yield i, f"{path}[{i}]", obj, invalid
        return
    for lineno, raw in enumerate(f, 1):
        if (own := _own_line(raw, share, stats)) is None:
            continue
        line, invalid = own
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            obj = BadRecord("malformed_json", f"{where}: malformed JSON ({_json_error(e)}); fix or "
                                              f"remove that line, {SKIP_HINT}")
        yield lineno, where, obj, invalid


def _json_error(e: json.JSONDecodeError) -> str:
    """``Invalid control character at column 17`` (json's own message ends in "at" for some errors)."""
    return f"{e.msg.removesuffix(' at')} at column {e.colno}"


def _iter_json(path: Path, rel: str, source: Source, stats: ReadStats, opts: ReadOptions,
               share: Share) -> Iterator[Document]:
    with_text = 0
    no_field = None  # the first record without the text field
    with open_binary(path) as f:
        for n, where, obj, invalid in json_records(f, path, stats, share):
            try:
                if isinstance(obj, BadRecord):
                    raise obj
                text = _record_text(obj, where, opts)
            except BadRecord as e:
                no_field = no_field or (str(e) if e.reason == "missing_text_field" else None)
                yield _bad_record(e, source, rel, n, where, opts, stats)
                continue
            with_text += 1
            yield _doc(source, rel, n, text, where, invalid, opts, stats)
    # --bad-records skip must not hide a wrong --text-column
    message = no_field and (f"{path}: no record has a {opts.text_column!r} field, e.g. "
                            f"{no_field.split('; ')[0]}; pass --text-column with the field that holds the text")
    if not share.whole:  # this task saw part of the file: the merge decides on all of it
        stats.text_fields[str(path)] = [with_text, message]
    elif message and not with_text:
        raise StageError(message)


def _check_column(names: list[str], where: str, opts: ReadOptions, schema=None) -> None:
    """The text column exists and, when the Arrow ``schema`` is known, holds strings."""
    if opts.text_column not in names:
        raise StageError(f"{where}: no {opts.text_column!r} column (found {sorted(names)}); "
                         f"pass --text-column with one of these")
    if schema is None:
        return

    def is_text(t) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)

    kind = schema.field(opts.text_column).type
    if not is_text(kind):
        texts = [f.name for f in schema if is_text(f.type)]
        raise StageError(f"{where}: column {opts.text_column!r} holds {kind}, not text; pass --text-column "
                         f"with a string column" + (f" (found {texts})" if texts else " (it has none)"))


def _iter_batches_text(batches, col: str, share: Share) -> Iterator[str | None]:
    """The text of this task's rows (every row is a document: ``share.pos`` is the row's position);
    only those rows' strings are decoded."""
    for batch in batches:
        n, first = len(batch), share.pos + 1
        column = batch.column(col)
        if share.whole:
            rows, texts = range(n), column.to_pylist()
        else:
            own = share.owned(first, n)
            rows, texts = own.tolist(), column.take(columns.array(own, pa.int64())).to_pylist()
        for j, text in zip(rows, texts):
            share.pos = first + j
            yield text
        share.pos = first + n - 1


def _iter_parquet(path: Path, rel: str, source: Source, stats: ReadStats, opts: ReadOptions,
                  share: Share) -> Iterator[Document]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:  # a cut file has no footer: "magic bytes not found"
        raise StageError(f"{path}: not a complete Parquet file ({e}); it may be truncated — re-download or "
                         f"re-write it") from e
    _check_column(pf.schema_arrow.names, str(path), opts, pf.schema_arrow)
    try:
        base = share.pos + 1  # the position of row 0
        if not share.whole:
            yield from _parquet_part(pf, path, rel, source, stats, opts, share, base)
            return
        for text in _iter_batches_text(pf.iter_batches(batch_size=1024, columns=[opts.text_column]),
                                       opts.text_column, share):
            i = share.pos - base
            yield _doc(source, rel, i, text or "", f"{path}#row{i}", False, opts, stats)
    except pa.ArrowException as e:  # a damaged page or row group
        raise StageError(f"{path}: cannot read ({e}); the file is damaged — re-download or re-write it") from e


def _parquet_part(pf: pq.ParquetFile, path: Path, rel: str, source: Source, stats: ReadStats,
                  opts: ReadOptions, share: Share, base: int) -> Iterator[Document]:
    """A Parquet file shared by several tasks: its rows are counted in its footer, so a task's part
    is a run of rows (:meth:`Share.rows`) and it reads only the row groups that hold them."""
    n, col = pf.metadata.num_rows, opts.text_column
    a, b = share.rows(n)
    groups, first, start = [], None, 0
    for g in range(pf.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if start < b and a < start + rows:
            groups.append(g)
            first = start if first is None else first
        start += rows
    i = first or 0
    for batch in pf.iter_batches(batch_size=1024, row_groups=groups, columns=[col]) if groups else ():
        lo, hi = max(a - i, 0), min(b - i, len(batch))
        for j, text in enumerate(batch.column(col).slice(lo, hi - lo).to_pylist() if lo < hi else ()):
            share.pos = base + i + lo + j
            yield _doc(source, rel, i + lo + j, text or "", f"{path}#row{i + lo + j}", False, opts, stats)
        i += len(batch)
    share.pos = base + n - 1


def _iter_saved(path: Path, rel: str, source: Source, stats: ReadStats, opts: ReadOptions,
                share: Share) -> Iterator[Document]:
    """A save_to_disk folder (a Dataset, or a DatasetDict and the source's split): its Arrow files,
    as ``datasets.load_from_disk`` lists them (``cache_files``), read batch by batch (no memory map)."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except (pa.ArrowException, OSError) as e:  # a file cut inside a record batch, or not Arrow at all
        where = next((f for f in sorted(path.rglob("*.arrow")) if not _reads(f)), path)
        raise StageError(f"{where}: cannot read ({e}); the file is damaged — save the dataset again") from e
    if isinstance(saved, datasets.DatasetDict):
        split = source.split or "train"
        if split not in saved:
            raise StageError(f"{path}: no split {split!r} (found {list(saved)}); set the source's split")
        saved, path, rel = saved[split], path / split, f"{rel}/{split}"
    _check_column(saved.column_names, str(path), opts, saved.features.arrow_schema)
    files = [Path(f["filename"]) for f in saved.cache_files]
    del saved
    yield from _iter_arrow(files, path, rel, source, stats, opts, share)


def _iter_arrow(files: list[Path], path: Path, rel: str, source: Source, stats: ReadStats,
                opts: ReadOptions, share: Share) -> Iterator[Document]:
    """The rows of Arrow stream ``files`` in order, as one input named ``path`` (row numbers run on
    across files), read batch by batch; a file cut short is named."""
    base = share.pos + 1  # the position of row 0 of the first file (row numbers run on across files)
    for arrow in files:
        _check_arrow_end(arrow)
        try:
            with pa.OSFile(str(arrow)) as fh:
                stream = pa.ipc.open_stream(fh)
                _check_column(stream.schema.names, str(arrow), opts, stream.schema)
                for text in _iter_batches_text(stream, opts.text_column, share):
                    i = share.pos - base
                    yield _doc(source, rel, i, text or "", f"{path}#row{i}", False, opts, stats)
        except pa.ArrowException as e:  # a message cut short, or damaged
            raise StageError(f"{arrow}: cannot read ({e}); the file is damaged — save or copy it again") from e


def _reads(arrow: Path) -> bool:
    """Whether an Arrow stream file reads to its end (to name the damaged one)."""
    try:
        with pa.OSFile(str(arrow)) as fh:
            pa.ipc.open_stream(fh).read_all()
        return True
    except (pa.ArrowException, OSError):
        return False


ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # the end-of-stream marker a closed Arrow stream writer leaves


def _check_arrow_end(arrow: Path) -> None:
    """An Arrow stream cut between two record batches reads without error: its missing end marker
    is the only sign of it."""
    with open(arrow, "rb") as f:
        f.seek(max(0, arrow.stat().st_size - len(ARROW_EOS)))
        if f.read() != ARROW_EOS:
            raise StageError(f"{arrow}: truncated Arrow stream (no end-of-stream marker) — save the dataset again")


def _iter_hub(source: Source, stats: ReadStats, opts: ReadOptions, share: Share) -> Iterator[Document]:
    name, config, split = source.hub_args()
    ds = open_hub(source)
    cols = list(ds.column_names or []) if ds.column_names is not None else None
    if cols is not None:
        _check_column(cols, source.path, opts)
    for i, row in enumerate(ds):  # a stream: every task reads every row, and takes its own
        if i == 0 and cols is None:
            _check_column(list(row), source.path, opts)
        if not share.next():
            continue
        text = row.get(opts.text_column) or ""
        if not isinstance(text, str):
            raise StageError(f"{source.path}#row{i}: column {opts.text_column!r} holds {type(text).__name__}, "
                             f"not text; pass --text-column with a string column")
        yield _doc(source, split, i, text, f"{source.path}#row{i}", False, opts, stats)


def open_hub(source: Source):
    """``datasets.load_dataset(name, config, split=..., streaming=True)`` with a clear error."""
    import datasets

    name, config, split = source.hub_args()
    local = Path(name)
    try:
        if local.is_dir() and not _is_saved_dataset(local):
            return datasets.load_dataset(str(local), config, split=split, streaming=True)
        return datasets.load_dataset(name, config, split=split, streaming=True, revision=source.revision)
    except Exception as e:  # datasets raises many kinds: missing name, config, split, offline
        raise StageError(f"{source.path}: cannot stream this dataset ({type(e).__name__}: {e}). "
                         f"Check the name, config and split, and the network (HF_HUB_OFFLINE).") from e


def hub_fingerprint(source: Source) -> dict:
    """What identifies the Hub input for the manifest: name, config, split and revision when known."""
    name, config, split = source.hub_args()
    out: dict = {"hub": name, "config": config, "split": split, "requested_revision": source.revision}
    if Path(name).is_dir():
        out["files"] = [{"path": str(f), "sha256": file_sha256(f)} for f in folder_files(Path(name))]
        return out
    try:
        import huggingface_hub

        out["revision"] = huggingface_hub.HfApi().dataset_info(name, revision=source.revision).sha
    except Exception as e:  # offline or private: say so instead of guessing
        out["revision"] = None
        out["revision_error"] = f"{type(e).__name__}: {e}"[:200]
    return out


def folder_files(folder: Path) -> list[Path]:
    """The files under an input folder (a save_to_disk folder, a local ``hf:`` folder), sorted;
    hidden ones (``.git``, the ``.cache`` that ``hf download`` leaves) are not part of the input."""
    return sorted(f for f in folder.rglob("*")
                  if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def unit_inputs(source: Source, path: Path | None) -> dict:
    """What the manifest records of one input of ``source``: its files with content hashes, or
    (``path`` None) the Hub dataset and revision."""
    if path is None:
        return hub_fingerprint(source)
    files = []
    for f in folder_files(path) if path.is_dir() else [path]:
        try:
            files.append({"path": str(f), "sha256": file_sha256(f)})
        except PermissionError as e:
            raise StageError(f"{f}: cannot read ({e.strerror}); check its permissions") from e
    return {"files": files}


def input_record(source: Source, units: list[dict] | None = None) -> dict:
    """The manifest's entry for one source: files with content hashes, or the Hub revision
    (``units``: :func:`unit_inputs` of each of its inputs, when the tasks that read them made them)."""
    rec = {"source": source.name, "lang": source.lang, "path": source.path, "weight": source.weight,
           "max_epochs": source.max_epochs}
    if units is None:
        units = [unit_inputs(source, p) for p in source.files() or [None]]
    if source.is_hub:
        rec.update(units[0])
    else:
        rec["files"] = [f for u in units for f in u["files"]]
    return rec


MIX_FILE_KEYS = ("sources",)


def load_mix_file(path: str | Path) -> list[Source]:
    """Sources from a mix file (YAML or JSON, see configs/data/): a list under ``sources`` of
    ``{path, lang, name?, weight?, max_epochs?, text_column?, split?, revision?}``. Relative paths are
    relative to the working directory, as on the command line. Strict: an unknown key, a value of
    the wrong type or an impossible weight is an error naming the source and the closest key."""
    p = Path(path)
    if not p.is_file():
        raise StageError(f"--mix {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StageError(f"--mix {path}: cannot parse ({e})") from e
    unknown = isinstance(data, dict) and unknown_keys_message(map(str, data), MIX_FILE_KEYS, "top-level key")
    if unknown:
        raise StageError(f"--mix {path}: {unknown}; a mix file holds only a list of sources under 'sources'")
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise StageError(f"--mix {path}: expected a mapping with a non-empty list under 'sources'")
    return [_mix_source(path, i, s) for i, s in enumerate(data["sources"])]


def _mix_source(path: str | Path, i: int, s) -> Source:
    where = f"--mix {path}: source #{i + 1}"
    if not isinstance(s, dict):
        raise StageError(f"{where}: expected a mapping with path, lang and optional keys, got {s!r}")
    if s.get("name"):
        where += f" ({s['name']})"
    missing = [k for k in ("path", "lang") if k not in s]
    if missing:
        raise StageError(f"{where}: missing {' and '.join(missing)} (every source needs a path and lang: km or en)")
    try:
        values = check_fields({str(k): v for k, v in s.items()}, Source, "key")
    except ValueError as e:
        raise StageError(f"{where}: {e}") from e
    if values["lang"] not in LANGS:
        raise StageError(f"{where}: lang {values['lang']!r} must be one of {list(LANGS)}"
                         f"{did_you_mean(values['lang'], LANGS)}")
    try:
        source = Source(**values)
    except ValueError as e:  # the message names the source
        raise StageError(f"--mix {path}: {e} (source #{i + 1})") from e
    source.origin = f"--mix {path}"  # for the errors of files(): not a field, so not a mix-file key
    return source
