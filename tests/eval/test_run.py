"""The evaluation stage end to end on a model this project trained (tests/conftest.py: trained_model)."""

import json
import math
import re
import shutil
import subprocess
import sys

import pytest

from tonsai.errors import StageError
from tonsai.eval.perplexity import score_texts
from tonsai.eval.report import load_report
from tonsai.eval.run import EvalConfig, read_curves, run_eval

from ..conftest import REPO, SAMPLE


def test_report_per_language_per_source_parallel_and_curves(trained_model, sample_pipeline, tmp_path):
    out = tmp_path / "eval"
    report = run_eval(EvalConfig(
        model_dir=str(trained_model), dataset_dir=str(sample_pipeline / "data"), output_dir=str(out),
        text=[f"km={SAMPLE / 'km.txt'}"], parallel=[str(SAMPLE / "km.txt"), str(SAMPLE / "en.txt")], device="cpu"))
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema_version"] == 3 and on_disk["languages"] == report["languages"]

    # per source: the dataset's own two sources plus the --text file; per language sums them
    sources = report["sources"]
    assert set(sources) == {"km:km.txt", "en:en.txt", "text:km.txt"}
    assert sources["text:km.txt"]["documents"] == 51
    km = report["languages"]["km"]
    assert km["documents"] == sources["km:km.txt"]["documents"] + 51
    assert km["tokens"] == sources["km:km.txt"]["tokens"] + sources["text:km.txt"]["tokens"]
    pooled = (sources["km:km.txt"]["loss"] * sources["km:km.txt"]["tokens"]
              + sources["text:km.txt"]["loss"] * sources["text:km.txt"]["tokens"]) / km["tokens"]
    assert km["loss"] == pytest.approx(pooled)
    assert km["bits_per_byte"] == pytest.approx(km["loss"] * km["tokens"] / math.log(2) / km["bytes"])

    # aligned sentences: the shipped corpus is line-aligned, 51 pairs
    p = report["parallel"]
    assert p["pairs"] == 51 and p["skipped_pairs"] == 0
    assert p["km_en_bits_ratio"] == pytest.approx(p["km_bits_per_sentence"] / p["en_bits_per_sentence"])
    assert 0 <= p["km_wins"] <= 1 and p["km_tokens_per_sentence"] > 1

    # loss curves came from the run's metrics.jsonl, and they go down
    curves = report["curves"]
    assert {"train", "km", "en"} <= set(curves)
    assert curves["km"][-1][1] < curves["km"][0][1]
    assert report["name"] == "run"

    md = (out / "report.md").read_text()
    assert "## Per source" in md and "text:km.txt" in md and "## Aligned sentences" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # bits-per-byte bars and loss curves
    assert not re.search(r"""(src|href)=["']https?:""", html)  # self-contained
    assert "Khmer costs" in html


def test_checkpoint_folder_compare_and_tokenizer_mismatch(trained_model, sample_pipeline, tmp_path):
    run_dir = trained_model.parent
    (ckpt,) = run_dir.glob("checkpoint-*")
    first = run_eval(EvalConfig(model_dir=str(ckpt), output_dir=str(tmp_path / "a"),
                                text=[f"en={SAMPLE / 'en.txt'}"], device="cpu"))
    assert first["name"] == f"run@{ckpt.name.split('-')[1]}"
    second = run_eval(EvalConfig(model_dir=str(trained_model), output_dir=str(tmp_path / "b"), name="final",
                                 text=[f"en={SAMPLE / 'en.txt'}"], compare=[str(tmp_path / "a")], device="cpu"))
    # the checkpoint is the final step: same weights, same figures
    assert second["languages"]["en"]["loss"] == pytest.approx(first["languages"]["en"]["loss"], rel=1e-6)
    assert second["compare"] == [{"name": first["name"], "path": str(tmp_path / "a" / "report.json")}]
    md = (tmp_path / "b" / "report.md").read_text()
    table = md.split("## Side by side", 1)[1]
    assert f"| {first['name']} |" in table and "| final |" in table and "en bits/byte" in table
    assert "Side by side" in (tmp_path / "b" / "report.html").read_text()

    # another tokenizer than the one the model was trained with is refused by its hash
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

    other = tmp_path / "other_tok"
    run_train_tokenizer(TokenizerConfig(output_dir=str(other), input=[str(SAMPLE / "en.txt")], vocab_size=300))
    with pytest.raises(StageError, match="not the tokenizer"):
        run_eval(EvalConfig(model_dir=str(trained_model), tokenizer_dir=str(other), output_dir=str(tmp_path / "c"),
                            text=[f"en={SAMPLE / 'en.txt'}"], device="cpu"))
    assert not (tmp_path / "c").exists()


def test_read_curves_keeps_the_last_value_of_a_repeated_step(tmp_path):
    f = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 2, "eval_km_loss": 4.5},
            {"step": 2, "loss": 3.9}, {"step": 3, "loss": 3.5}]  # resumed at step 2: logged again
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_curves(f) == {"train": [[1, 5.0], [2, 3.9], [3, 3.5]], "km": [[2, 4.5]]}
    f.write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "lo\n')
    with pytest.raises(StageError, match=r"metrics.jsonl:2: malformed JSON"):
        read_curves(f)


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "eval_model.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_bad_input_gets_a_clear_message_and_nonzero_exit(trained_model, tmp_path):
    r = _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o")
    assert r.returncode == 2 and "nothing to evaluate" in r.stderr
    r = _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o", "--text", SAMPLE / "km.txt")
    assert r.returncode == 1 and "expected LANG=FILE" in r.stderr
    short = tmp_path / "short.txt"
    short.write_text("ក\nខ\n", encoding="utf-8")
    r = _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o", "--parallel", SAMPLE / "km.txt", short)
    assert r.returncode == 1 and "has 51 lines but" in r.stderr and str(short) in r.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    r = _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o", "--text", f"km={empty}")
    assert r.returncode == 1 and "holds no non-empty document" in r.stderr and str(empty) in r.stderr
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    r = _cli("--model-dir", not_a_model, "--output-dir", tmp_path / "o", "--text", f"km={short}")
    assert r.returncode == 1 and "no config.json" in r.stderr
    r = _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o", "--text", f"km={short}",
             "--compare", not_a_model)
    assert r.returncode == 1 and "no report.json" in r.stderr
    assert not (tmp_path / "o").exists()
    with pytest.raises(StageError, match="schema_version"):
        (tmp_path / "bad.json").write_text('{"x": 1}')
        load_report(tmp_path / "bad.json")


def test_a_bad_text_record_names_what_eval_accepts(trained_model, tmp_path):
    """The reader's messages name prepare_dataset.py's --text-column and --bad-records; eval_model.py has
    neither, so its message says what it reads and what to change."""
    for body, expect in [('{"text": "Hello there."}\n{"body": "no text"}\n',
                          r"t.jsonl:2: no 'text' field \(found \['body'\]\); eval_model.py --text reads each "
                          r"record's 'text' field \(it has no --text-column\): rename the field to 'text'"),
                         ('{"text": "Hello there."}\n{"text": 3}\n', r"t.jsonl:2: field 'text' is a number, not a "
                                                                     r"string; fix or remove the record$"),
                         ('{"text": "Hello there."}\n{"text": \n', r"t.jsonl:2: malformed JSON .*; fix or remove "
                                                                    r"that line$")]:
        (tmp_path / "t.jsonl").write_text(body, encoding="utf-8")
        r = _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o", "--text", f"en={tmp_path / 't.jsonl'}")
        (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
        assert r.returncode == 1 and line.startswith(f"error: --text en={tmp_path / 't.jsonl'}: ")
        assert re.search(expect, line), line
        assert "--bad-records" not in line and "pass --text-column" not in line
    assert "unrecognized arguments" in _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o", "--text",
                                            f"en={tmp_path / 't.jsonl'}", "--bad-records", "skip").stderr
    assert not (tmp_path / "o").exists()


def test_invalid_utf8_in_a_text_file_is_counted_and_warned_about(trained_model, tmp_path):
    """As prepare_dataset.py does (tonsai.data.sources): the line is scored with U+FFFD, counted, and the
    warning names the file and the first such line; never decoded in silence."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes("A good line of English text.\n".encode() + b"a bad \xff\xfe line of text\n"
                    + "Another good line.\n".encode() + b"one more \xc3 bad one\n")
    r = _cli("--model-dir", trained_model, "--output-dir", tmp_path / "o", "--text", f"en={bad}")
    assert r.returncode == 0, r.stderr
    assert re.search(rf"WARNING .*--text en={bad}: 2 line\(s\) of {bad} are not valid UTF-8 \(the first: {bad}:2\)",
                     r.stderr)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    (text,) = report["eval_set"]["text"]
    assert text["invalid_utf8_lines"] == 2 and text["documents"] == 4
    assert "2 line(s) not UTF-8, scored with U+FFFD" in (tmp_path / "o" / "report.md").read_text()


@pytest.mark.slow
def test_a_lora_checkpoint_is_refused_with_what_to_pass_instead(trained_model, tmp_path):
    """A LoRA run's checkpoint-N/ holds the adapter only: the message points at the run's final/ (the
    model with the adapter merged in), or says to finish the run when there is none yet."""
    from tonsai.sft.config import SftConfig
    from tonsai.sft.run import run_sft

    run = tmp_path / "lora"
    run_sft(SftConfig(model_dir=str(trained_model), data=[str(SAMPLE / "conversations.jsonl")], output_dir=str(run),
                      method="lora", lora_rank=4, micro_batch_size=4, max_steps=1, eval_steps=1, save_steps=1,
                      logging_steps=1, seed=0, device="cpu", dataloader_workers=0, report_to=["none"]))
    ckpt = run / "checkpoint-1"
    assert (ckpt / "adapter_config.json").is_file() and not (ckpt / "config.json").exists()
    for folder in (ckpt, run / "adapter"):
        r = _cli("--model-dir", folder, "--output-dir", tmp_path / "o", "--text", f"en={SAMPLE / 'en.txt'}")
        assert r.returncode == 1
        (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
        assert line.startswith(f"error: --model-dir {folder}: a LoRA adapter (adapter_config.json), not a whole model")
        assert line.endswith(f"final/ is the base model with the adapter merged in): pass {run / 'final'}")
        assert "pass a run's final/ or checkpoint-N/" not in line
    shutil.rmtree(run / "final")
    r = _cli("--model-dir", ckpt, "--output-dir", tmp_path / "o", "--text", f"en={SAMPLE / 'en.txt'}")
    assert r.returncode == 1 and f"--resume-from auto) to write {run / 'final'}, then pass that" in r.stderr
    assert not (tmp_path / "o").exists()


def _split_corpus(folder, n_parts=2):
    """The sample corpus as two Khmer and two English source files (halves of each file)."""
    folder.mkdir()
    files = {}
    for lang in ("km", "en"):
        lines = (SAMPLE / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        for i in range(n_parts):
            p = folder / f"{lang}_{'ab'[i]}.txt"
            p.write_text("\n".join(lines[i::n_parts]) + "\n", encoding="utf-8")
            files.setdefault(lang, []).append(str(p))
    return files


def test_report_equals_the_last_validation_point_with_several_sources_per_language(sample_pipeline, tmp_path):
    """One definition of per-language loss: eval_model.py (window and stride from the run's manifest)
    gives exactly what training's validation logged last, with two sources per language."""
    from tonsai.data.prepare import PrepareConfig, run_prepare
    from tonsai.train.config import TrainConfig
    from tonsai.train.run import run_train

    files = _split_corpus(tmp_path / "corpus")
    data, run = tmp_path / "data", tmp_path / "run"
    run_prepare(PrepareConfig(output_dir=str(data), khmer=files["km"], english=files["en"],
                              validation_fraction=0.25, min_validation_docs=4))
    run_train(TrainConfig(
        dataset_dir=str(data), tokenizer_dir=str(sample_pipeline / "tok"),
        model_config=str(REPO / "configs/model/gpt2_tiny.json"), output_dir=str(run), block_size=64,
        micro_batch_size=4, max_steps=3, eval_steps=3, save_steps=3, logging_steps=1, learning_rate=2e-3,
        seed=0, device="cpu", dataloader_workers=0, report_to=[]))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    report = run_eval(EvalConfig(model_dir=str(run / "final"), dataset_dir=str(data), output_dir=str(tmp_path / "e"),
                                 device="cpu"))
    # the window is the run's training block (64), not the model's context (256)
    assert report["block_size"] == 64 and report["stride"] == 32 and report["window_from"].startswith("training block")
    assert report["eval_set"]["window"] == 64 and report["eval_set"]["dataset"]["split"] == "validation"
    for lang in ("km", "en"):
        last = [r for r in rows if f"eval_{lang}_loss" in r][-1]
        assert last["step"] == 3
        got = report["languages"][lang]
        assert got["tokens"] == last[f"eval_{lang}_tokens"]
        assert abs(got["loss"] - last[f"eval_{lang}_loss"]) < 1e-5
        assert abs(got["bits_per_byte"] - last[f"eval_{lang}_bpb"]) < 1e-5
        # both sources of the language are in its validation split; their figures sum to the language's
        mine = {s: m for s, m in report["sources"].items() if m["lang"] == lang}
        assert set(mine) == {f"{lang}:{lang}_a.txt", f"{lang}:{lang}_b.txt"}
        assert sum(m["tokens"] for m in mine.values()) == got["tokens"]
        assert sum(m["loss"] * m["tokens"] for m in mine.values()) == pytest.approx(got["loss"] * got["tokens"])

    # the old definition (each source its own stream, summed) does not give the validation point
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.eval.inputs import dataset_sets

    model = AutoModelForCausalLM.from_pretrained(run / "final").eval()
    tok = AutoTokenizer.from_pretrained(run / "final")
    sets, _ = dataset_sets(data, "validation")
    per_source: dict[str, list[str]] = {}
    for s in sets:
        if s.lang == "km":
            per_source.setdefault(s.source, []).extend(s.texts)
    old = [score_texts(model, tok, texts, 64, 32) for texts in per_source.values()]
    old_loss = sum(o.nll_nats for o in old) / sum(o.tokens for o in old)
    assert abs(old_loss - report["languages"]["km"]["loss"]) > 1e-4

    # --window overrides the run's block, and the report says so
    short = run_eval(EvalConfig(model_dir=str(run / "final"), dataset_dir=str(data), output_dir=str(tmp_path / "w"),
                                window=32, device="cpu"))
    assert (short["block_size"], short["stride"], short["window_from"]) == (32, 16, "--window")
    assert short["languages"]["km"]["loss"] != report["languages"]["km"]["loss"]
    # --max-tokens scores the start of each language's stream, as training's --eval-max-tokens does
    capped = run_eval(EvalConfig(model_dir=str(run / "final"), dataset_dir=str(data), output_dir=str(tmp_path / "m"),
                                 max_tokens=100, device="cpu"))
    assert capped["languages"]["km"]["tokens"] == 100 and capped["eval_set"]["max_tokens"] == 100


def test_curves_of_a_continual_run_count_on_from_the_base_model(tmp_path):
    """Rows with step_total (continual pretraining) place the curves after the base model's 60 steps; a
    row without it takes the offset of the rows around it; a plain run keeps its steps."""
    f = tmp_path / "metrics.jsonl"
    rows = [{"step": 0, "eval_km_loss": 4.0},  # the base model's validation, before the first training row
            {"step": 1, "step_total": 61, "loss": 3.9, "tokens_total": 62_464},
            {"step": 2, "step_total": 62, "loss": 3.8}, {"step": 2, "eval_km_loss": 3.7}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_curves(f) == {"train": [[61, 3.9], [62, 3.8]], "km": [[60, 4.0], [62, 3.7]]}
    f.write_text("\n".join(json.dumps({k: v for k, v in r.items() if not k.endswith("_total")}) for r in rows))
    assert read_curves(f) == {"train": [[1, 3.9], [2, 3.8]], "km": [[0, 4.0], [2, 3.7]]}
