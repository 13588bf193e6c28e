"""report.html: one self-contained page (inline CSS, plots as embedded PNG), no network needed.

Plots: the loss curves of each run per language (training loss and validation loss from
metrics.jsonl), bits per byte per language for every compared model, and one bar per suite task.
"""

from __future__ import annotations

import base64
import html
import io

from tonsai.eval.report import (LANG_NAMES, NOTES, column_value, comparison_tables, different_tokenizers,
                                eval_set_line, fmt_value, suite_rows)

# matplotlib is imported inside _pyplot() only (pyplot: 0.4 s to import on a 2-core machine): eval_model.py
# and safety_check.py import this module for their reports, and their --help must not pay it.

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans Khmer",sans-serif;margin:2rem auto;max-width:68rem;
color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #d5d9e2;padding:.3rem .6rem}th{background:#f2f4f8;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#556;font-size:.9rem}.note{color:#556;font-size:.88rem;max-width:52rem}
img{max-width:100%;border:1px solid #e4e7ee;margin:.4rem 0}
"""


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def html_table(header: list[str], rows: list[list], numeric_from: int = 1) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = "–" if v is None else fmt_value(v)
            cls = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def _curves_plot(reports: list[dict]) -> str | None:
    with_curves = [r for r in reports if r.get("curves")]
    if not with_curves:
        return None
    plt = _pyplot()
    panels = sorted({k for r in with_curves for k in r["curves"]}, key=lambda k: (k != "train", k))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, key in zip(axes[0], panels):
        for r in with_curves:
            pts = r["curves"].get(key)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None,
                        label=r["name"])
        ax.set_title("training loss" if key == "train" else f"validation loss: {LANG_NAMES.get(key, key)} ({key})")
        ax.set_xlabel("step")
        ax.set_ylabel("nats/token")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def grouped_bars(title: str, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> str:
    plt = _pyplot()
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(groups) * max(1, len(series)) + 2), 3.2))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        ys = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, ys, width=width, label=name)
        for b, v in zip(bars, values):
            if v is not None:
                ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups,
                  rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _suite_panels(reports: list[dict]) -> str:
    """One small bar chart per suite task (its metrics have different scales), every run side by side."""
    plt = _pyplot()
    tasks: dict[tuple[str, str], list[str]] = {}
    for r in reports:
        for s, t, m, _, _ in suite_rows(r):
            metrics = tasks.setdefault((s, t), [])
            if m not in metrics:
                metrics.append(m)
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 2.9 * rows), squeeze=False)
    width = 0.8 / len(reports)
    for ax, ((suite, task), metrics) in zip(axes.flat, tasks.items()):
        for i, r in enumerate(reports):
            values = [column_value(r, f"suite:{suite}:{task}:{m}") for m in metrics]
            xs = [j + i * width for j in range(len(metrics))]
            bars = ax.bar(xs, [v or 0.0 for v in values], width=width, label=r["name"])
            for b, v in zip(bars, values):
                if v is not None:
                    ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                                va="bottom", fontsize=7)
        ax.set_xticks([j + width * (len(reports) - 1) / 2 for j in range(len(metrics))],
                      [m.removeprefix("km_").replace("_", " ") for m in metrics], rotation=25, ha="right",
                      fontsize=7)
        ax.set_title(f"{suite} / {task}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    if len(reports) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def render_html(report: dict, compared: list[dict] = ()) -> str:
    reports = [report, *compared]
    esc = html.escape
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tonsai evaluation: "
             f"{esc(report.get('name', ''))}</title><style>{CSS}</style></head><body>",
             f"<h1>Evaluation report: {esc(report.get('name', ''))}</h1>",
             f"<p class=\"meta\">model <code>{esc(report['model_dir'])}</code>"
             + (f" · data <code>{esc(str(report['dataset_dir']))}</code> (split {esc(str(report['split']))})"
                if report.get("dataset_dir") else "")
             + f" · windows {report['block_size']} tokens, stride {report['stride']}"
             + (f" ({esc(report['window_from'])})" if report.get("window_from") else "")
             + f" · {esc(report.get('device', ''))} {esc(report.get('dtype', ''))}</p>"]
    if report.get("eval_set"):
        parts.append(f"<p class=\"meta\">evaluation set: {esc(eval_set_line(report))}</p>")

    if report.get("languages"):
        parts.append("<h2>Per language</h2>")
        parts.append(html_table(["language", "documents", "tokens", "loss (nats/token)", "perplexity", "bits/byte",
                             "bits/char"],
                            [[f"{LANG_NAMES.get(lang, lang)} ({lang})", m["documents"], m["tokens"], m["loss"],
                              m["perplexity"], m["bits_per_byte"], m["bits_per_char"]]
                             for lang, m in report["languages"].items()]))
    if len(report.get("sources", {})) > 1:
        parts.append("<h2>Per source</h2>")
        parts.append(html_table(["source", "language", "documents", "loss", "bits/byte", "bits/char"],
                            [[name, m["lang"], m["documents"], m["loss"], m["bits_per_byte"], m["bits_per_char"]]
                             for name, m in report["sources"].items()], numeric_from=2))
    langs = sorted({lang for r in reports for lang in r.get("languages", {})})
    if langs:
        parts.append(grouped_bars("bits per byte (lower is better)", [LANG_NAMES.get(x, x) for x in langs],
                                   {r["name"]: [r.get("languages", {}).get(x, {}).get("bits_per_byte") for x in langs]
                                    for r in reports}, "bits/byte"))
    if report.get("parallel"):
        p = report["parallel"]
        parts.append("<h2>Aligned sentences</h2>")
        parts.append(f"<p>{p['pairs']:,} pairs from <code>{esc(p['km_file'])}</code> and "
                     f"<code>{esc(p['en_file'])}</code>. Khmer costs <b>{p['km_en_bits_ratio']:.3f}×</b> the bits "
                     f"of the same sentence in English (1.0 would be parity).</p>")
        parts.append(html_table(["", "Khmer", "English"],
                            [["bits per sentence", p["km_bits_per_sentence"], p["en_bits_per_sentence"]],
                             ["tokens per sentence", p["km_tokens_per_sentence"], p["en_tokens_per_sentence"]]]))
    curves = _curves_plot(reports)
    if curves:
        parts += ["<h2>Loss curves</h2>", curves]
    rows = suite_rows(report)
    if rows:
        parts.append("<h2>Prompt suites</h2>")
        if report.get("suite_limit"):
            parts.append(f"<p class=\"note\">At most {report['suite_limit']} examples per task: a quick look, "
                         "not a benchmark figure.</p>")
        if report.get("suite_chat"):
            parts.append("<p class=\"note\">Each prompt was given as a user turn in the model's chat template "
                         "(<code>--chat</code>).</p>")
        parts.append(html_table(["suite", "task", "metric", "value", "examples"],
                            [[s, t, m, v, n] for s, t, m, v, n in rows], numeric_from=3))
        parts.append(_suite_panels(reports))
    if compared:
        parts.append("<h2>Side by side</h2>")
        parts.append(f"<p class=\"note\">Every model below was scored on the same evaluation set "
                     f"({esc(eval_set_line(report))}).</p>")
        if different_tokenizers(reports):
            parts.append("<p class=\"note\">The models have different tokenizers: loss is per token of each one's "
                         "own, so only bits per byte is shown (it does not depend on the tokenizer).</p>")
        for title, cols in comparison_tables(reports):
            parts.append(f"<h3>{esc(title)}</h3>")
            parts.append(html_table(["model", *[c for c, _ in cols]],
                                [[r["name"], *[column_value(r, k) for _, k in cols]] for r in reports]))
    parts.append("<p class=\"note\">" + esc(" ".join(NOTES)) + "</p></body></html>")
    return "\n".join(parts)
