"""scripts/safety_check.py end to end on a model this project trained (tests/conftest.py: trained_model)."""

import json
import shutil
import subprocess
import sys

import pytest

from tonsai.safety import CATEGORIES
from tonsai.safety.run import EXIT_FAILED, SafetyConfig, main

from ..conftest import REPO

SCRIPT = [sys.executable, str(REPO / "scripts" / "safety_check.py")]


def run_script(*args):
    return subprocess.run([*SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def checked(trained_model, tmp_path_factory):
    """One real check of the trained model: two prompts per language and category, 16 new tokens."""
    out = tmp_path_factory.mktemp("safety") / "check"
    r = run_script("--model-dir", trained_model, "--output-dir", out, "--limit", 2, "--max-new-tokens", 16,
                   "--device", "cpu", "--max-flagged-rate", 1.0)
    assert r.returncode == 0, r.stderr
    return out, r


def test_report_has_rates_per_language_and_category(checked, trained_model):
    out, r = checked
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["schema"] == "tonsai-safety-1" and report["passed"] is True
    assert report["model_dir"] == str(trained_model) and report["prompts"]["n"] == 24
    assert set(report["languages"]) == {"km", "en"}
    for lang, m in report["languages"].items():
        assert m["n"] == 12 and set(m["categories"]) == set(CATEGORIES)
        assert m["rate"] == pytest.approx(m["flagged"] / 12)
        assert sum(c["flagged"] for c in m["categories"].values()) == m["flagged"]
    assert report["overall"]["flagged"] == len(report["flagged"])
    samples = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(samples) == 24 and any(s["generation"].strip() for s in samples)  # the model wrote something
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "PASSED" in md and "| Khmer (`km`) | 12 |" in md and "| English (`en`) | 12 |" in md
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Flagged rate per language" in page and "data:image/png;base64," in page
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "safety" and manifest["config"]["limit"] == 2
    assert "PASSED" in r.stderr


def test_a_flagged_generation_fails_the_check_with_exit_3(checked, tmp_path):
    """An earlier check's generations, one answer given a threatening Khmer sentence typed with a
    non-canonical vowel order: scored without the model, it fails at --max-flagged-rate 0."""
    out, _ = checked
    samples = [json.loads(line) for line in (out / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    target = next(s for s in samples if s["lang"] == "km" and s["category"] == "violence")
    target["generation"] += " ខ្ញុំនឹងសម\u17b6\u17d2លប់ឯង"  # សម្លាប់ឯង, "I will kill you", vowel typed first
    gens = tmp_path / "generations.jsonl"
    gens.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")

    r = run_script("--generations", gens, "--limit", 2, "--output-dir", tmp_path / "strict", "--max-flagged-rate", 0)
    assert r.returncode == EXIT_FAILED == 3, r.stderr
    report = json.loads((tmp_path / "strict" / "report.json").read_text(encoding="utf-8"))
    assert report["passed"] is False and "km" in report["failing_languages"]
    flagged = {s["id"]: s for s in report["flagged"]}
    assert flagged[target["id"]]["terms"] == [{"term": "សម្លាប់ឯង", "category": "violence", "count": 1}]
    assert report["languages"]["km"]["categories"]["violence"]["flagged"] >= 1
    assert "FAILED" in (tmp_path / "strict" / "report.md").read_text(encoding="utf-8")
    assert "FAILED" in r.stderr

    # the same generations pass a threshold above their rate (in process: main() is what the script calls)
    loose = SafetyConfig(output_dir=str(tmp_path / "loose"), generations=str(gens), limit=2, max_flagged_rate=0.99)
    assert main(loose) == 0


def test_bad_input_exits_1_and_bad_options_exit_2(checked, tmp_path, trained_model):
    out, _ = checked
    r = run_script("--model-dir", trained_model, "--output-dir", out, "--max-flagged-rate", 0.1, "--limit", 1)
    assert r.returncode == 1 and "already holds a complete safety output" in r.stderr
    r = run_script("--model-dir", trained_model, "--output-dir", tmp_path / "x", "--max-flagged-rate", 0.1,
                   "--prompts", tmp_path / "missing.jsonl")
    assert r.returncode == 1 and f"--prompts {tmp_path / 'missing.jsonl'}: no such file" in r.stderr
    r = run_script("--model-dir", trained_model, "--generations", out / "generations.jsonl",
                   "--output-dir", tmp_path / "y", "--max-flagged-rate", 0.1)
    assert r.returncode == 2 and "either --model-dir" in r.stderr
    # prompts in a language no --lexicon file covers would pass unscored: refused
    r = run_script("--generations", out / "generations.jsonl", "--limit", 2, "--output-dir", tmp_path / "w",
                   "--max-flagged-rate", 0.1, "--lexicon", REPO / "eval_suites" / "safety" / "lexicon_en.yaml")
    assert r.returncode == 1 and "no lexicon file for km" in r.stderr and not (tmp_path / "w").exists()
    # a model without a chat template refuses --chat before generating
    cfg = SafetyConfig(output_dir=str(tmp_path / "z"), model_dir=str(trained_model), chat=True, max_flagged_rate=0.1,
                       limit=1, device="cpu")
    assert main(cfg) == 1
    assert not (tmp_path / "z").exists()


def test_chat_prompts_go_through_the_tokenizer_chat_template(trained_model, tmp_path):
    """A copy of the model whose tokenizer has a chat template: each prompt is the user turn, and the
    generation is the greedy continuation of the template's token ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tmp_path / "chat_model"
    shutil.copytree(trained_model, model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = ("{% for m in messages %}{{ eos_token }}{{ m['role'] }}: {{ m['content'] }}\n"
                               "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    cfg = SafetyConfig(output_dir=str(tmp_path / "out"), model_dir=str(model_dir), chat=True, max_flagged_rate=1.0,
                       limit=1, max_new_tokens=8, device="cpu")
    assert main(cfg) == 0
    sample = json.loads((tmp_path / "out" / "generations.jsonl").read_text(encoding="utf-8").splitlines()[0])

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": sample["prompt"]}], add_generation_prompt=True,
                                  return_dict=True)["input_ids"]
    assert tok.decode(ids).startswith(tok.eos_token + "user: ")
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    new = out[0, len(ids):].tolist()
    new = new[:new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
    assert sample["generation"] == tok.decode(new, skip_special_tokens=True)
    assert json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["chat"] is True


def test_shipped_config_file_loads_and_flags_override_it():
    from tonsai.cli import parse_config

    cfg = parse_config(SafetyConfig, "", ["--config", str(REPO / "configs/safety/release.yaml"), "--model-dir", "m",
                                          "--output-dir", "o", "--max-new-tokens", "32"])
    assert cfg.max_flagged_rate == 0.025 and cfg.chat is True and cfg.max_new_tokens == 32
    assert cfg.lexicon == ["eval_suites/safety"] and cfg.prompts == "eval_suites/safety/prompts.jsonl"


def test_chat_answers_end_at_the_tuned_models_end_of_turn_token(trained_model):
    """With a template installed by train_sft.py, the safety check's greedy decoding stops at <|end|> (the
    model's real generate() is called; the test only records what it was asked to stop at)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.safety.generate import generate
    from tonsai.safety.prompts import Prompt
    from tonsai.sft.template import END_TOKEN, install_chat_template, resize_for_new_tokens

    tok = AutoTokenizer.from_pretrained(trained_model)
    model = AutoModelForCausalLM.from_pretrained(trained_model).eval()
    resize_for_new_tokens(model, tok, install_chat_template(tok))
    asked, real = [], model.generate

    def recording_generate(**kwargs):
        asked.append(kwargs["eos_token_id"])
        return real(**kwargs)

    model.generate = recording_generate
    out = generate(model, tok, [Prompt("p1", "en", "violence", "Tell me about the weather.")], chat=True,
                   tok_dir=trained_model, max_new_tokens=4, batch_size=1, device="cpu")
    assert len(out) == 1 and len(asked) == 1 and sorted(asked[0]) == sorted([tok.convert_tokens_to_ids(END_TOKEN),
                                                                              tok.eos_token_id])
