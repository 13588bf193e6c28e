"""End to end on the shipped sample corpus: the same code path as `uv run python scripts/quickstart.py`."""

import json
import logging
import math

import pytest

from tonsai.manifest import read_manifest
from tonsai.quickstart import QuickstartConfig, run_quickstart, validation_curve
from tonsai.text import normalize

from .conftest import SAMPLE


def test_quickstart_pipeline_learns_and_reports_both_languages(tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="tonsai.train.run"):
        result = run_quickstart(QuickstartConfig(output_dir=str(tmp_path / "qs")))
    paths = result["paths"]

    # every stage left a complete folder with a manifest
    for stage, key in (("prepare", "data"), ("tokenizer", "tokenizer"), ("train", "run"), ("eval", "eval")):
        assert read_manifest(paths[key], stage)["stage"] == stage

    # validation loss ends below where it started, in both languages
    for lang in ("km", "en"):
        curve = validation_curve(paths["run"], lang)
        assert len(curve) >= 3
        assert curve[-1][1] < curve[0][1] - 0.5, (lang, curve)

    # the report has real km and en figures
    report = json.loads((tmp_path / "qs" / "eval" / "report.json").read_text())
    for lang in ("km", "en"):
        m = report["languages"][lang]
        assert m["documents"] > 0 and m["tokens"] > 0
        assert math.isfinite(m["loss"]) and m["perplexity"] == math.exp(m["loss"])
        # better than a uniform guess over the vocabulary
        assert m["loss"] < math.log(1024)
        assert 0 < m["bits_per_byte"] < m["bits_per_char"] or lang == "en"
        # the same scoring code and windows as training's validation: the report ends the curve
        assert m["loss"] == pytest.approx(validation_curve(paths["run"], lang)[-1][1], rel=1e-5)
    md = (tmp_path / "qs" / "eval" / "report.md").read_text()
    assert "Khmer (`km`)" in md and "English (`en`)" in md
    # bits per sentence on the shipped aligned sentences, and the Khmer core suite, in json, md and html
    assert report["parallel"]["pairs"] == 51
    core = report["suites"]["khmer_core"]
    assert {"qa_km", "translate_km_en", "translate_en_km", "summarize_km", "topic_km", "reading_km"} <= set(core)
    assert core["topic_km"]["n"] == 15
    samples = json.loads((tmp_path / "qs" / "eval" / "samples.json").read_text())["khmer_core"]["topic_km"]
    picked = [max(range(len(s["choices"])), key=lambda i: s["loglikelihoods"][i]) for s in samples]
    assert picked == [s["predicted"] for s in samples]
    assert core["topic_km"]["acc"] == sum(p == s["answer"] for p, s in zip(picked, samples)) / 15
    assert "## Prompt suites" in md and "## Aligned sentences" in md
    html = (tmp_path / "qs" / "eval" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # bits/byte bars, loss curves, suite bars

    # tokens seen: exact (epochs here end in a short batch), and split by language
    rows = [json.loads(x) for x in (tmp_path / "qs" / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    assert last["tokens_seen_km"] + last["tokens_seen_en"] == last["tokens_seen"] <= last["step"] * 8 * 128
    assert "report.md" in capsys.readouterr().out
    # 100 steps over a sample of a few thousand tokens: the run says how often its data repeats
    passes = [r.getMessage() for r in caplog.records if "passes over the" in r.getMessage()]
    assert len(passes) == 1 and passes[0].startswith("the budget trains ") and "the data repeats" in passes[0]

    # the tokenizer round-trips the sample text
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    for name in ("km.txt", "en.txt"):
        text = normalize((SAMPLE / name).read_text(encoding="utf-8"))
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text

    # instruction tuning: the held-out conversations' loss falls in both languages, and the tuned model's
    # report, made with its chat template, sits beside the base model's on the same evaluation set
    assert read_manifest(paths["sft"], "sft")["method"] == "full"
    sft_rows = [json.loads(x) for x in (tmp_path / "qs" / "sft" / "metrics.jsonl").read_text().splitlines()]
    for lang in ("km", "en"):
        held_out = [r[f"eval_{lang}_loss"] for r in sft_rows if f"eval_{lang}_loss" in r]
        assert len(held_out) >= 3 and held_out[-1] < held_out[0] - 0.1, (lang, held_out)
    sft_report = json.loads((tmp_path / "qs" / "eval-sft" / "report.json").read_text())
    assert sft_report["suite_chat"] is True
    assert [c["path"] for c in sft_report["compare"]] == [str(tmp_path / "qs" / "eval" / "report.json")]
    assert set(sft_report["suites"]["khmer_core"]) == set(core)
    sft_md = (tmp_path / "qs" / "eval-sft" / "report.md").read_text()
    assert "## Side by side" in sft_md and "chat template" in sft_md
