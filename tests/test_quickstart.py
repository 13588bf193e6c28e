"""End to end on the shipped sample corpus: the same code path as `uv run python scripts/quickstart.py`."""

import json
import math

from tonsai.manifest import read_manifest
from tonsai.quickstart import QuickstartConfig, run_quickstart, validation_curve
from tonsai.text import normalize

from .conftest import SAMPLE


def test_quickstart_pipeline_learns_and_reports_both_languages(tmp_path, capsys):
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
    md = (tmp_path / "qs" / "eval" / "report.md").read_text()
    assert "Khmer (`km`)" in md and "English (`en`)" in md
    assert "report.md" in capsys.readouterr().out

    # the tokenizer round-trips the sample text
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths["tokenizer"])
    for name in ("km.txt", "en.txt"):
        text = normalize((SAMPLE / name).read_text(encoding="utf-8"))
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
