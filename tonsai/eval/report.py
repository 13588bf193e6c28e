"""Writing evaluation reports: report.json for machines, report.md for people.

report.json schema (version 1):

    {
      "schema_version": 1,
      "model_dir": str, "dataset_dir": str, "split": str,
      "block_size": int, "stride": int,
      "languages": {
        "<km|en|...>": {"loss": float, "perplexity": float, "bits_per_byte": float,
                        "bits_per_char": float, "documents": int, "tokens": int,
                        "bytes": int, "characters": int}
      }
    }
"""

from __future__ import annotations

from pathlib import Path

from tonsai.atomic import write_json, write_text

SCHEMA_VERSION = 1
LANG_NAMES = {"km": "Khmer", "en": "English"}


def render_markdown(report: dict) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{report['model_dir']}`",
        f"- data: `{report['dataset_dir']}` (split `{report['split']}`)",
        f"- windows: {report['block_size']} tokens, stride {report['stride']}",
        "",
        "| language | documents | tokens | loss (nats/token) | perplexity | bits/byte | bits/char |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, m in report["languages"].items():
        lines.append(
            f"| {LANG_NAMES.get(lang, lang)} (`{lang}`) | {m['documents']:,} | {m['tokens']:,} | {m['loss']:.4f} | "
            f"{m['perplexity']:.2f} | {m['bits_per_byte']:.4f} | {m['bits_per_char']:.4f} |"
        )
    lines += [
        "",
        "Loss and perplexity are per token of this model's tokenizer: compare them only between models that",
        "share it. Bits per byte and per character do not depend on the tokenizer; they compare models",
        "within one language. A Khmer character is 3 UTF-8 bytes and an English letter 1, so bits per byte",
        "does not compare Khmer with English.",
        "",
    ]
    return "\n".join(lines)


def write_report(out_dir: str | Path, report: dict) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report))
