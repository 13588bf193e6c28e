"""--compare: reports record their evaluation set; only reports on the same set go side by side, in
tables that fit a page (tonsai/eval/compare.py, tonsai/eval/report.py)."""

import json
import re
import shutil

import pytest

from tonsai.errors import StageError
from tonsai.eval.report import MAX_COLUMNS, comparison_columns, render_markdown
from tonsai.eval.run import EvalConfig, run_eval
from tonsai.manifest import file_sha256, tokenizer_hash

from ..conftest import REPO, SAMPLE

CORE = str(REPO / "eval_suites" / "khmer_core")


def _halves(folder):
    folder.mkdir()
    lines = (SAMPLE / "en.txt").read_text(encoding="utf-8").splitlines()
    a, b = folder / "en_a.txt", folder / "en_b.txt"
    a.write_text("\n".join(lines[::2]) + "\n", encoding="utf-8")
    b.write_text("\n".join(lines[1::2]) + "\n", encoding="utf-8")
    return a, b


def test_reports_record_their_set_and_compare_refuses_another(trained_model, tmp_path):
    en_a, en_b = _halves(tmp_path / "text")
    a = run_eval(EvalConfig(model_dir=str(trained_model), output_dir=str(tmp_path / "a"), text=[f"en={en_a}"],
                            suite=[CORE], limit=1, device="cpu"))
    es = a["eval_set"]
    assert (es["window"], es["stride"], es["max_tokens"], es["dataset"]) == (128, 64, None, None)  # the run's block
    assert es["text"] == [{"source": "text:en_a.txt", "lang": "en", "file": str(en_a), "sha256": file_sha256(en_a),
                           "documents": 26, "invalid_utf8_lines": 0}]
    assert es["suites"][0]["name"] == "khmer_core" and es["suites"][0]["limit"] == 1
    assert len(es["suites"][0]["sha256"]) == 64
    assert "evaluation set: en=" in (tmp_path / "a" / "report.md").read_text()
    assert a["tokenizer_sha256"] == tokenizer_hash(trained_model)

    # the same file at another path is the same set: shown side by side, in tables that fit a page
    copy = tmp_path / "copy" / "en_a.txt"
    copy.parent.mkdir()
    shutil.copy(en_a, copy)
    run_eval(EvalConfig(model_dir=str(trained_model), output_dir=str(tmp_path / "b"), text=[f"en={copy}"],
                        suite=[CORE], limit=1, compare=[str(tmp_path / "a")], name="again", device="cpu"))
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    all_cols = comparison_columns([b, a])
    assert len(all_cols) > 2 * MAX_COLUMNS  # the khmer_core suite alone has more metrics than one table holds
    side = (tmp_path / "b" / "report.md").read_text().split("## Side by side", 1)[1]
    headers = [line for line in side.splitlines() if line.startswith("| model |")]
    assert len(headers) >= 3
    seen = []
    for h in headers:
        cells = [c.strip() for c in h.strip("|").split("|")][1:]
        assert len(cells) <= MAX_COLUMNS
        seen += cells
    assert seen == [label for label, _ in all_cols]
    assert side.count("| again |") == side.count("| run |") == len(headers)
    html_side = (tmp_path / "b" / "report.html").read_text().split("<h2>Side by side</h2>", 1)[1]
    tables = re.findall(r"<table><tr>(.*?)</tr>", html_side)
    assert len(tables) == len(headers) and all(t.count("<th>") <= MAX_COLUMNS + 1 for t in tables)

    # another file, another window, a report that does not record its set: refused before the model loads
    sha_a, sha_b = file_sha256(en_a)[:12], file_sha256(en_b)[:12]
    with pytest.raises(StageError, match=rf"--text: this run en={sha_b}, that report en={sha_a}"):
        run_eval(EvalConfig(model_dir=str(trained_model), output_dir=str(tmp_path / "c"), text=[f"en={en_b}"],
                            suite=[CORE], limit=1, compare=[str(tmp_path / "a")], device="cpu"))
    with pytest.raises(StageError, match=r"--window: this run 64, that report 128(.|\n)*--stride: this run 32"):
        run_eval(EvalConfig(model_dir=str(trained_model), output_dir=str(tmp_path / "c"), text=[f"en={en_a}"],
                            suite=[CORE], limit=1, window=64, compare=[str(tmp_path / "a")], device="cpu"))
    old = tmp_path / "old"
    old.mkdir()
    legacy = {k: v for k, v in a.items() if k != "eval_set"} | {"schema_version": 2}
    (old / "report.json").write_text(json.dumps(legacy))
    with pytest.raises(StageError, match="written before reports recorded their evaluation set"):
        run_eval(EvalConfig(model_dir=str(trained_model), output_dir=str(tmp_path / "c"), text=[f"en={en_a}"],
                            suite=[CORE], limit=1, compare=[str(old)], device="cpu"))
    assert not (tmp_path / "c").exists()


def test_loss_goes_side_by_side_only_between_models_that_share_a_tokenizer():
    """Loss is per token of each model's own vocabulary: with two tokenizers only bits per byte is shown."""
    def report(name, tok, loss, bpb):
        return {"name": name, "model_dir": name, "block_size": 128, "stride": 64, "tokenizer_sha256": tok,
                "eval_set": {"window": 128, "stride": 64}, "languages": {"km": {
                    "loss": loss, "perplexity": 1.0, "bits_per_byte": bpb, "bits_per_char": 1.0, "documents": 1,
                    "tokens": 1, "bytes": 1, "characters": 1}}}

    small_vocab, big_vocab = report("small", "a" * 64, 5.08, 2.15), report("big", "b" * 64, 3.64, 1.10)
    assert comparison_columns([small_vocab, big_vocab]) == [("km bits/byte", "lang:km:bits_per_byte")]
    md = render_markdown(small_vocab, [big_vocab])
    assert "different tokenizers" in md and "| km loss |" not in md.split("## Side by side")[1]
    same = report("small-2", "a" * 64, 5.00, 2.10)
    assert ("km loss", "lang:km:loss") in comparison_columns([small_vocab, same])
    assert "different tokenizers" not in render_markdown(small_vocab, [same])


def test_a_split_prepared_again_from_the_same_files_is_the_same_set(trained_model, tmp_path):
    """The dataset split is identified by the rows scored, not by the manifest prepare writes (which holds
    its times and timings): preparing the same files twice gives reports that compare; other rows do not.
    A report from before the row hash compares by the manifest's hash, as it did."""
    from tonsai.data.prepare import PrepareConfig, run_prepare

    upper = tmp_path / "upper_en.txt"
    upper.write_text((SAMPLE / "en.txt").read_text(encoding="utf-8").upper(), encoding="utf-8")

    def prepare(name, en=SAMPLE / "en.txt"):
        run_prepare(PrepareConfig(output_dir=str(tmp_path / name), khmer=[str(SAMPLE / "km.txt")],
                                  english=[str(en)], validation_fraction=0.1, min_validation_docs=3))
        return str(tmp_path / name)

    prep_a, prep_b, prep_c = prepare("prep_a"), prepare("prep_b"), prepare("prep_c", en=upper)
    assert file_sha256(f"{prep_a}/manifest.json") != file_sha256(f"{prep_b}/manifest.json")

    def evaluate(out, data, compare=()):
        return run_eval(EvalConfig(model_dir=str(trained_model), dataset_dir=data, output_dir=str(tmp_path / out),
                                   compare=[str(tmp_path / c) for c in compare], device="cpu"))

    a = evaluate("a", prep_a)
    assert len(a["eval_set"]["dataset"]["rows_sha256"]) == 64
    b = evaluate("b", prep_b, compare=["a"])
    assert b["compare"] == [{"name": "run", "path": str(tmp_path / "a" / "report.json")}]
    assert b["languages"] == a["languages"]
    assert b["eval_set"]["dataset"]["rows_sha256"] == a["eval_set"]["dataset"]["rows_sha256"]
    with pytest.raises(StageError, match=r"--dataset-dir/--split: this run split 'validation' with rows sha256 "
                                         r"\w{12}, that report split 'validation' with rows sha256"):
        evaluate("c", prep_c, compare=["a"])

    # a report written before the row hash: the same prepared folder compares, another preparation does not
    (tmp_path / "old").mkdir()
    legacy = json.loads((tmp_path / "a" / "report.json").read_text())
    del legacy["eval_set"]["dataset"]["rows_sha256"]
    (tmp_path / "old" / "report.json").write_text(json.dumps(legacy))
    evaluate("d", prep_a, compare=["old"])
    with pytest.raises(StageError, match=r"--dataset-dir/--split: this run split 'validation' of the dataset with "
                                         r"manifest sha256"):
        evaluate("e", prep_b, compare=["old"])


@pytest.mark.slow
def test_the_tuned_model_compares_with_its_base_by_default(trained_model, sample_pipeline, tmp_path):
    """docs/sft.md's flow: eval the base, then the SFT model with --chat --compare the base's report, no
    --window. The SFT run records its base's window (its own block is its packed conversations'), so
    both are scored on one set; an SFT model from before that record follows its base_model's manifest.
    A report of suites alone compares whatever the windows: no suite figure depends on them."""
    from tonsai.sft.config import SftConfig
    from tonsai.sft.run import run_sft

    sft = tmp_path / "sft"
    run_sft(SftConfig(model_dir=str(trained_model), data=[str(SAMPLE / "conversations.jsonl")], output_dir=str(sft),
                      micro_batch_size=4, max_steps=1, eval_steps=1, save_steps=1, logging_steps=1, seed=0,
                      device="cpu", dataloader_workers=0, report_to=["none"]))
    manifest = json.loads((sft / "final" / "manifest.json").read_text())
    assert manifest["block_size"] == 256  # the model's context: its packed conversations
    assert manifest["eval_window"]["block_size"] == 128 and manifest["eval_window"]["eval_stride"] is None
    data = str(sample_pipeline / "data")

    def evaluate(out, model, **kw):
        return run_eval(EvalConfig(model_dir=str(model), output_dir=str(tmp_path / out), suite=[CORE], limit=1,
                                   device="cpu", **kw))

    evaluate("base", trained_model, dataset_dir=data)
    tuned = evaluate("tuned", sft / "final", dataset_dir=data, chat=True, compare=[str(tmp_path / "base")])
    assert (tuned["block_size"], tuned["stride"]) == (128, 64)
    assert str(trained_model / "manifest.json") in tuned["window_from"]
    assert len(tuned["compare"]) == 1

    # an SFT model written before eval_window: its base's window, read from the base's manifest
    del manifest["eval_window"]
    (sft / "final" / "manifest.json").write_text(json.dumps(manifest))
    older = evaluate("older", sft / "final", dataset_dir=data, chat=True, compare=[str(tmp_path / "base")])
    assert (older["block_size"], older["stride"]) == (128, 64)

    # suites only: the window is no part of what was scored
    evaluate("base_suites", trained_model, window=64)
    evaluate("tuned_suites", sft / "final", chat=True, compare=[str(tmp_path / "base_suites")])
