"""Which inputs each document task reads: whole files where a source has many, a part of a file's
documents where a file is shared by several tasks.

tonsai plans this itself rather than using datatrove's file sharding (``files[rank::world_size]``)
for two reasons: the merge keeps the earliest of duplicate documents in input order, so every
document needs its position in its source whatever the number of tasks; and a source of one big
file must still be spread over every task.

Each local source's files (a save_to_disk folder counts as one) are its *units*; a Hub stream is
one unit. The source's bytes on disk, its units in file order, are cut into ``world`` equal
stripes, one per task (sizes count one byte more than the file, so an empty file belongs to a
stripe too). A unit inside one task's stripe is that task's alone: no other task opens it. A unit
that straddles stripes is read by every task whose stripe it overlaps, and each takes the
documents whose place in a period of PERIOD positions falls in ``[lo, hi)``, the overlap's part of
the unit (the parts tile ``[0, PERIOD)``; places spread consecutive positions evenly); the others'
documents are found, not decoded (:class:`tonsai.data.sources.Share`). A Parquet file's part is a
run of its rows instead (its footer counts them), and a task reads only the row groups that hold
them. So a task opens the files of its stripe and at most two more
per source, and takes about 1/world of every source, Khmer and English alike, so that tasks take
about the same time. A Hub stream is read by every task (each takes a ``1/world`` part), and a
compressed file cannot be entered in the middle: one big ``.jsonl.zst`` is scanned by every task,
so a corpus meant for many machines should come in many files (FineWeb-2 ships Parquet files of
about 2 GB).

A document's ``order`` is ``unit << ORDER_BITS | position in the unit``; the merge turns it into a
*slot* with the units' document counts (every task reports the units it read), which is the
document's position in its source after the sources before it: the same slots, ids and dataset for
any number of tasks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tonsai.data.sources import PERIOD, Share, Source, folder_files, input_record
from tonsai.errors import StageError

ORDER_BITS = 40  # order = unit << 40 | position inside the unit (1.1e12 documents a unit, 8.4M units)
POS_MASK = (1 << ORDER_BITS) - 1


@dataclasses.dataclass(frozen=True)
class TaskUnit:
    source: int  # index of the source
    unit: int  # index of the unit over all sources, in order
    path: Path | None  # a file or save_to_disk folder; None: the source's Hub stream
    share: Share  # this task's part of it (a fresh Share: positions from the unit's first document)

    @property
    def lead(self) -> bool:
        """Whether this task reports the unit's input hashes (exactly one of its readers does)."""
        return self.share.lo == 0


def unit_sizes(source: Source) -> list[tuple[Path | None, int]]:
    """(path, bytes on disk + 1) of each unit of ``source``; a Hub stream is (None, 1)."""
    if source.is_hub:
        return [(None, 1)]
    return [(p, 1 + (sum(f.stat().st_size for f in folder_files(p)) if p.is_dir() else p.stat().st_size))
            for p in source.files()]


def task_units(sources: list[Source], rank: int, world: int) -> list[TaskUnit]:
    """The units that task ``rank`` of ``world`` reads, with its part of each, in input order."""
    out, first = [], 0
    for si, source in enumerate(sources):
        units = unit_sizes(source)
        if source.is_hub:
            out.append(TaskUnit(si, first, None, Share.of(rank, world)))
        else:
            total = sum(size for _, size in units)
            a, b = total * rank // world, total * (rank + 1) // world  # this task's stripe
            start = 0
            for i, (path, size) in enumerate(units):
                lo, hi = (max(a, start) - start) * PERIOD // size, (min(b, start + size) - start) * PERIOD // size
                if start < b and a < start + size and lo < hi:
                    out.append(TaskUnit(si, first + i, path, Share(lo, hi)))
                start += size
        first += len(units)
    return out


CROWDED_MIN_BYTES = 256_000_000  # a file shared by several tasks is worth a warning from this size


def crowded_inputs(sources: list[Source], world: int) -> list[tuple[Path, int, int, int]]:
    """(path, bytes, tasks, stripe bytes) of the big files that three or more of ``world`` tasks
    share: each reads such a file whole to find its part (a Parquet file only its row groups)."""
    out = []
    for source in sources:
        units = [] if source.is_hub else unit_sizes(source)
        stripe = sum(size for _, size in units) / world
        for path, size in units:
            tasks = min(world, int(size // stripe) + 2)  # the stripes a run of `size` bytes can overlap, at most
            if size > CROWDED_MIN_BYTES and tasks >= 3 and path.suffix != ".parquet":
                out.append((path, size - 1, tasks, int(stripe)))
    return out


def unit_layout(reports: list[dict], sources: list[Source]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """From every task's unit report (``SourceReader``'s summary: unit -> source, documents,
    input, inputs where the task leads it): each unit's first slot (``unit_offs``, one entry more
    than units), each source's first slot (``offs``, one more than sources) and the manifest's
    inputs. Tasks that read the same unit must have found the same input and number of documents
    in it, and every unit of the sources must be reported."""
    units: dict[int, dict] = {}
    for report in reports:
        for key, u in report.items():
            seen = units.setdefault(int(key), dict(u))
            if (seen["input"], seen["source"]) != (u["input"], u["source"]):
                raise StageError(f"two document tasks read different inputs as input {key} ({seen['input']} and "
                                 f"{u['input']}): files were added or removed while the stage ran")
            if seen["documents"] != u["documents"]:
                raise StageError(f"{u['input']}: two document tasks found {seen['documents']} and {u['documents']} "
                                 f"documents in it: it changed while the stage ran")
            seen["inputs"] = seen["inputs"] or u["inputs"]
    expected = sum(1 if s.is_hub else len(s.files()) for s in sources)
    missing = sorted(set(range(expected)) - set(units))
    if missing or len(units) != expected or any(u["inputs"] is None for u in units.values()):
        raise StageError(f"the document tasks' reports cover {len(units)} of the {expected} inputs"
                         + (f" (none for input {missing[0]})" if missing else "")
                         + ": the inputs changed since the tasks ran, or a task's files are damaged")
    ordered = [units[g] for g in range(expected)]
    unit_offs = np.zeros(len(ordered) + 1, dtype=np.int64)
    unit_offs[1:] = np.cumsum([u["documents"] for u in ordered])
    src = np.array([u["source"] for u in ordered], dtype=np.int64)
    offs = np.append(unit_offs[np.searchsorted(src, np.arange(len(sources)))], unit_offs[-1])
    inputs = [input_record(s, [u["inputs"] for u in ordered if u["source"] == si]) for si, s in enumerate(sources)]
    return unit_offs, offs, inputs


def slots(order: np.ndarray, unit_offs: np.ndarray) -> np.ndarray:
    """The slots of documents by their ``order`` (:func:`unit_layout`'s ``unit_offs``)."""
    return unit_offs[order >> ORDER_BITS] + (order & POS_MASK)
