"""Which reports ``--compare`` may put side by side: those scored on the same evaluation set.

A report records its evaluation set under ``eval_set`` (:mod:`tonsai.eval.report`): the window,
stride and token cap of the sliding windows, the dataset split (by ``rows_sha256``, a hash of the
rows scored: each one's language and text, in the split's order) or the ``--text`` files (by content
hash), the aligned files of ``--parallel`` (by content hash), and the prompt suites (by a digest of
the items as scored, and the ``--limit``). The window, stride and cap count only where a dataset
split or ``--text`` file was scored (suites and ``--parallel`` do not use them). Paths are not part
of it: the same file in another folder is the same set, and so is the same split written by another run of prepare (its manifest differs in
its times and timings, not in what was scored). Reports written before ``rows_sha256`` identify a
split by the SHA-256 of the dataset's manifest and its name; a pair where either side lacks the row
hash is compared that way.

``--compare`` refuses a report on another set, and says what differs. Refusing, rather than
printing both in separate groups with a note, because a side-by-side table is read at a glance
and a note beside it is easy to miss; every difference is fixed by rerunning eval_model.py with
the flags the message names (for example ``--window 128 --stride 64``), which takes minutes.
"""

from __future__ import annotations

from tonsai.errors import StageError


def _dataset_identity(dataset: dict | None, by_rows: bool) -> dict | None:
    if not dataset:
        return None
    if by_rows:
        return {"rows_sha256": dataset["rows_sha256"], "split": dataset["split"], "by_rows": True}
    return {"dataset_manifest_sha256": dataset["dataset_manifest_sha256"], "split": dataset["split"]}


def identity(eval_set: dict, by_rows: bool | None = None) -> dict:
    """The parts of ``eval_set`` that decide what was scored (no paths, no counts). A dataset split is
    identified by its rows' hash (``by_rows``; default: when the report records it), else by the
    dataset manifest's hash and the split's name."""
    dataset = eval_set.get("dataset")
    parallel = eval_set.get("parallel")
    if by_rows is None:
        by_rows = bool(dataset and dataset.get("rows_sha256"))
    # the sliding windows score only the dataset split and --text files: suites and --parallel do not use them
    windowed = bool(dataset or eval_set.get("text"))
    return {
        "window": eval_set.get("window") if windowed else None,
        "stride": eval_set.get("stride") if windowed else None,
        "max_tokens": eval_set.get("max_tokens") if windowed else None,
        "dataset": _dataset_identity(dataset, by_rows),
        "text": sorted((t["lang"], t["sha256"]) for t in eval_set.get("text") or []),
        "parallel": parallel and (parallel["km_sha256"], parallel["en_sha256"]),
        "suites": sorted((s["name"], s["sha256"], s.get("limit")) for s in eval_set.get("suites") or []),
    }


def _describe(key: str, value) -> str:
    if value in (None, []):
        return "none"
    if key == "dataset" and value.get("by_rows"):
        return f"split {value['split']!r} with rows sha256 {value['rows_sha256'][:12]}"
    if key == "dataset":
        return f"split {value['split']!r} of the dataset with manifest sha256 {value['dataset_manifest_sha256'][:12]}"
    if key == "text":
        return ", ".join(f"{lang}={sha[:12]}" for lang, sha in value)
    if key == "parallel":
        return f"km {value[0] and value[0][:12]}, en {value[1] and value[1][:12]}"
    if key == "suites":
        return ", ".join(f"{name} ({sha[:12]}, limit {limit})" for name, sha, limit in value)
    return str(value)


FLAGS = {"window": "--window", "stride": "--stride", "max_tokens": "--max-tokens", "dataset": "--dataset-dir/--split",
         "text": "--text", "parallel": "--parallel", "suites": "--suite/--limit"}


def differences(this: dict, other: dict) -> list[str]:
    """What differs between two evaluation sets, one line per field (empty when they are the same set)."""
    datasets = [s.get("dataset") for s in (this, other)]
    by_rows = all(d.get("rows_sha256") for d in datasets if d)  # else the older way, for an older report
    a, b = identity(this, by_rows), identity(other, by_rows)
    return [f"{FLAGS[k]}: this run {_describe(k, a[k])}, that report {_describe(k, b[k])}" for k in a if a[k] != b[k]]


def check_comparable(eval_set: dict, reports: list[dict]) -> list[dict]:
    """``reports`` unchanged when all were scored on ``eval_set``; otherwise a StageError that names
    each report and what differs."""
    problems = []
    for r in reports:
        if "eval_set" not in r:
            problems.append(f"{r['path']}: written before reports recorded their evaluation set; rerun "
                            "eval_model.py for that model with this run's flags")
            continue
        diff = differences(eval_set, r["eval_set"])
        if diff:
            problems.append(f"{r['path']} ({r['name']}) was scored on another evaluation set:\n    "
                            + "\n    ".join(diff))
    if problems:
        raise StageError("--compare shows only reports scored on the same evaluation set (tonsai/eval/compare.py):\n  "
                         + "\n  ".join(problems)
                         + "\n  Rerun eval_model.py for one side with the other's flags, or leave it out of --compare.")
    return reports
