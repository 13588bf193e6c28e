"""Evaluation reports: report.json for machines, report.md and report.html for people.

report.json schema (version 3; keys marked * appear only when that input was given):

    {
      "schema_version": 3,
      "name": str,                        # label of the model in reports and comparisons
      "model_dir": str, "dataset_dir": str | null, "split": str | null,
      "block_size": int, "stride": int,   # sliding windows, in tokens
      "window_from": str,                 # "--window", "training block (<manifest>)" or "model context"
      "eval_set": {                       # what was scored; --compare needs equal sets (tonsai.eval.compare)
        "window": int, "stride": int, "max_tokens": int | null,  # null: every token
        "dataset": {"dataset_dir", "dataset_manifest_sha256", "split", "documents",
                    "rows_sha256"} | null,  # rows_sha256: the rows scored (language, text), in order;
                                            # reports before it lack it and compare by manifest hash
        "text": [{"source", "lang", "file", "sha256", "documents",
                  "invalid_utf8_lines"}],  # lines scored with U+FFFD for bytes that are not UTF-8
        "parallel"*: {"km_file", "en_file", "km_sha256", "en_sha256"},
        "suites"*: [{"name", "path", "sha256", "limit"}]   # sha256: digest of the items as scored
      },
      "tokenizer_sha256": str | null,     # of the model's tokenizer.json (loss is per token of it)
      "device": str, "dtype": str,
      "languages": {                      # one stream per language: its documents in order (a dataset
                                          # split's order, then --text files) joined by end-of-text,
                                          # as training's validation scores it
        "<km|en|...>": {"loss": float,          # nats per token of this model's tokenizer
                        "perplexity": float,    # exp(loss)
                        "bits_per_byte": float, # tokenizer-independent; compare models within a language
                        "bits_per_char": float,
                        "documents": int, "tokens": int, "bytes": int, "characters": int}
      },
      "sources": {"<source>": {"lang": str, ...the same figures...}},  # a source's tokens within its
                                          # language's stream: the sources of a language sum to it
      "parallel"*: {"km_file", "en_file", "pairs", "skipped_pairs",
                    "km_bits_per_sentence", "en_bits_per_sentence", "km_en_bits_ratio",
                    "km_tokens_per_sentence", "en_tokens_per_sentence",
                    "km_wins"},           # share of pairs where the Khmer side costs fewer bits
      "suites"*: {"<suite>": {"<task>": {"<metric>": float, "n": int}}},
      "suite_limit"*: int | null,         # examples per task were capped at this
      "suite_chat"*: bool,                # prompts went through the tokenizer's chat template (--chat)
      "metrics_file"*: str, "curves"*: {"train": [[step, loss], ...], "<lang>": [[step, val loss], ...]},
                                          # step: step_total when the run logs it (continual pretraining
                                          # counts on from the base model's steps), else step
      "compare": [{"name": str, "path": str}]   # reports shown side by side in report.md/html
    }

Version 1 (the walking skeleton's) had only the keys up to "languages"; version 2 had no
"eval_set" and scored each source as its own stream. :func:`load_report` reads all three;
``--compare`` accepts only reports that record their evaluation set.
"""

from __future__ import annotations

import json
from pathlib import Path

from tonsai.errors import StageError

SCHEMA_VERSION = 3
LANG_NAMES = {"km": "Khmer", "en": "English"}
NOTES = [
    "Loss and perplexity are per token of this model's tokenizer: compare them only between models that",
    "share it. Bits per byte and per character do not depend on the tokenizer; they compare models",
    "within one language. A Khmer character is 3 UTF-8 bytes and an English letter 1, so bits per byte",
    "does not compare Khmer with English; bits per sentence on aligned translations does.",
]


def lang_label(lang: str) -> str:
    return f"{LANG_NAMES.get(lang, lang)} (`{lang}`)"


def load_report(path: str | Path) -> dict:
    """A report.json, from its path or its folder; ``path`` is added to the returned dict."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise StageError(f"--compare {path}: no report.json there; pass a folder written by eval_model.py")
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StageError(f"{p}: not valid JSON ({e}); rerun eval_model.py for that model") from e
    if not isinstance(report, dict) or report.get("schema_version") not in (1, 2, 3):
        raise StageError(f"{p}: not a tonsai evaluation report (schema_version 1 to 3 expected)")
    report.setdefault("name", Path(report.get("model_dir", p.parent.name)).parent.name or p.parent.name)
    report.setdefault("sources", {})
    report["path"] = str(p)
    return report


def fmt_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def suite_rows(report: dict) -> list[tuple[str, str, str, float, int | None]]:
    """(suite, task, metric, value, n) for every suite score."""
    rows = []
    for suite, tasks in (report.get("suites") or {}).items():
        for task, metrics in tasks.items():
            n = metrics.get("n")
            for metric, value in metrics.items():
                if metric != "n" and isinstance(value, (int, float)):
                    rows.append((suite, task, metric, float(value), n))
    return rows


MAX_COLUMNS = 7  # value columns per side-by-side table, besides the model's name: fits a page


def _chunks(title: str, groups: list[list[tuple[str, str]]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Pack groups of columns (e.g. one task's metrics) into tables of at most MAX_COLUMNS columns,
    keeping a group whole; a group wider than that gets tables of its own, split evenly."""
    tables: list[list[tuple[str, str]]] = [[]]
    for group in groups:
        if len(group) > MAX_COLUMNS:
            parts = -(-len(group) // MAX_COLUMNS)
            size = -(-len(group) // parts)
            tables += [group[i:i + size] for i in range(0, len(group), size)] + [[]]
            continue
        if len(tables[-1]) + len(group) > MAX_COLUMNS:
            tables.append([])
        tables[-1].extend(group)
    tables = [t for t in tables if t]
    return [(title if len(tables) == 1 else f"{title} ({i}/{len(tables)})", t) for i, t in enumerate(tables, 1)]


def comparison_tables(reports: list[dict]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Side-by-side tables, models as rows: one for the per-language figures, then one per suite (split
    by task when wide), each at most MAX_COLUMNS value columns of (label, key)."""
    langs = sorted({lang for r in reports for lang in r.get("languages", {})})
    same_tokens = not different_tokenizers(reports)
    text = [[(f"{lang} bits/byte", f"lang:{lang}:bits_per_byte")]
            + ([(f"{lang} loss", f"lang:{lang}:loss")] if same_tokens else []) for lang in langs]
    if any("parallel" in r for r in reports):
        text.append([("km/en bits per sentence", "parallel:km_en_bits_ratio")])
    tables = _chunks("Per language", text) if text else []
    by_suite: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for r in reports:
        for suite, task, metric, _, _ in suite_rows(r):
            cols = by_suite.setdefault(suite, {}).setdefault(task, [])
            col = (f"{task} {metric}", f"suite:{suite}:{task}:{metric}")
            if col not in cols:
                cols.append(col)
    for suite, tasks in by_suite.items():
        for _, cols in _chunks(suite, list(tasks.values())):
            names = dict.fromkeys(key.split(":")[2] for _, key in cols)
            tables.append((f"{suite}: {', '.join(names)}", cols))
    return tables


def different_tokenizers(reports: list[dict]) -> bool:
    """Whether two of ``reports`` name different tokenizers (then their losses, per token of each
    one's own vocabulary, are not comparable; a report that names none is taken as comparable)."""
    return len({r["tokenizer_sha256"] for r in reports if r.get("tokenizer_sha256")}) > 1


def comparison_columns(reports: list[dict]) -> list[tuple[str, str]]:
    """Every side-by-side column, in table order."""
    return [col for _, cols in comparison_tables(reports) for col in cols]


def column_value(report: dict, key: str):
    kind, _, rest = key.partition(":")
    if kind == "lang":
        lang, metric = rest.split(":")
        return report.get("languages", {}).get(lang, {}).get(metric)
    if kind == "parallel":
        return (report.get("parallel") or {}).get(rest)
    suite, task, metric = rest.split(":", 2)
    return (report.get("suites") or {}).get(suite, {}).get(task, {}).get(metric)


def eval_set_line(report: dict) -> str:
    """One line naming what a report scored: dataset split or files (short hashes), windows, cap."""
    es = report.get("eval_set") or {}
    parts = []
    if es.get("dataset"):
        d = es["dataset"]
        parts.append(f"split {d['split']} of dataset {d['dataset_manifest_sha256'][:12]}"
                     + (f" (rows {d['rows_sha256'][:12]})" if d.get("rows_sha256") else ""))
    parts += [f"{t['lang']}={t['file']} ({t['sha256'][:12]}"
              + (f"; {t['invalid_utf8_lines']} line(s) not UTF-8, scored with U+FFFD" if t.get("invalid_utf8_lines")
                 else "") + ")" for t in es.get("text") or []]
    if es.get("parallel"):
        parts.append("parallel " + " ".join(str(es["parallel"][k]) for k in ("km_file", "en_file")))
    parts += [f"suite {s['name']}" + (f" (limit {s['limit']})" if s.get("limit") else "") for s in es.get("suites") or []]
    parts.append(f"window {es.get('window', report.get('block_size'))}, stride {es.get('stride', report.get('stride'))}"
                 + (f", first {es['max_tokens']:,} tokens per language" if es.get("max_tokens") else ""))
    return "; ".join(parts)


def render_markdown(report: dict, compared: list[dict] = ()) -> str:
    lines = [f"# Evaluation report: {report.get('name', '')}", "", f"- model: `{report['model_dir']}`"]
    if report.get("dataset_dir"):
        lines.append(f"- data: `{report['dataset_dir']}` (split `{report['split']}`)")
    lines += [f"- windows: {report['block_size']} tokens, stride {report['stride']}"
              + (f" (window: {report['window_from']})" if report.get("window_from") else "")]
    if report.get("eval_set"):
        lines.append(f"- evaluation set: {eval_set_line(report)}")
    lines.append("")
    if report.get("languages"):
        lines += [
            "## Per language", "",
            "| language | documents | tokens | loss (nats/token) | perplexity | bits/byte | bits/char |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for lang, m in report["languages"].items():
            lines.append(
                f"| {lang_label(lang)} | {m['documents']:,} | {m['tokens']:,} | {m['loss']:.4f} | "
                f"{m['perplexity']:.2f} | {m['bits_per_byte']:.4f} | {m['bits_per_char']:.4f} |")
        lines.append("")
    if len(report.get("sources", {})) > 1:
        lines += ["## Per source", "", "| source | language | documents | loss | bits/byte | bits/char |",
                  "|---|---|---:|---:|---:|---:|"]
        for name, m in report["sources"].items():
            lines.append(f"| {name} | {m['lang']} | {m['documents']:,} | {m['loss']:.4f} | "
                         f"{m['bits_per_byte']:.4f} | {m['bits_per_char']:.4f} |")
        lines.append("")
    if report.get("parallel"):
        p = report["parallel"]
        lines += [
            "## Aligned sentences", "",
            f"{p['pairs']:,} pairs from `{p['km_file']}` and `{p['en_file']}` ({p['skipped_pairs']} skipped: an empty side).",
            "",
            "| | Khmer | English |", "|---|---:|---:|",
            f"| bits per sentence | {p['km_bits_per_sentence']:.1f} | {p['en_bits_per_sentence']:.1f} |",
            f"| tokens per sentence | {p['km_tokens_per_sentence']:.1f} | {p['en_tokens_per_sentence']:.1f} |",
            "",
            f"Khmer costs {p['km_en_bits_ratio']:.3f}× the bits of the same sentence in English "
            f"(1.0 would be parity); the Khmer side is cheaper for {100 * p['km_wins']:.1f}% of pairs.",
            "",
        ]
    rows = suite_rows(report)
    if rows:
        limit = report.get("suite_limit")
        lines += ["## Prompt suites", ""]
        if limit:
            lines += [f"At most {limit} examples per task (`--limit`): a quick look, not a benchmark figure.", ""]
        if report.get("suite_chat"):
            lines += ["Each prompt was given as a user turn in the model's chat template (`--chat`).", ""]
        lines += ["| suite | task | metric | value | examples |", "|---|---|---|---:|---:|"]
        lines += [f"| {s} | {t} | {m} | {v:.4f} | {fmt_value(n)} |" for s, t, m, v, n in rows]
        lines.append("")
    if compared:
        reports = [report, *compared]
        lines += ["## Side by side", "", "Every model below was scored on the same evaluation set "
                  f"({eval_set_line(report)}).", ""]
        if different_tokenizers(reports):
            lines += ["The models have different tokenizers: loss is per token of each one's own, so only bits per "
                      "byte is shown (it does not depend on the tokenizer).", ""]
        for title, cols in comparison_tables(reports):
            lines += [f"### {title}", "", "| model | " + " | ".join(c for c, _ in cols) + " |",
                      "|---|" + "---:|" * len(cols)]
            for r in reports:
                vals = [column_value(r, k) for _, k in cols]
                lines.append(f"| {r['name']} | " + " | ".join("–" if v is None else fmt_value(v) for v in vals) + " |")
            lines.append("")
    lines += NOTES + [""]
    return "\n".join(lines)
