"""scripts/train_sft.py end to end on the project's own tiny model and shipped conversations: full
and LoRA tuning, the chat model that comes out, exact resume after kill -9, and refused inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, SAMPLE
from tests.train.runs import LAUNCH_VARS, wait_and_kill
from tonsai.errors import StageError
from tonsai.sft.config import SftConfig
from tonsai.sft.run import run_sft

pytestmark = pytest.mark.slow
DATA = [str(SAMPLE / "conversations.jsonl"), str(SAMPLE / "instructions.jsonl")]
ARGS = dict(micro_batch_size=4, max_steps=8, eval_steps=4, save_steps=4, logging_steps=2,
            learning_rate=1e-3, seed=0, device="cpu", dataloader_workers=0, report_to=["none"])


def cli_args(model, out, **kw) -> list[str]:
    args = ["--model-dir", str(model), "--data", *DATA, "--output-dir", str(out)]
    for k, v in {**ARGS, **kw}.items():
        args += [f"--{k.replace('_', '-')}", *(v if isinstance(v, list) else [str(v)])]
    return args


def config(model, out, **kw) -> SftConfig:
    return SftConfig(model_dir=str(model), data=DATA, output_dir=str(out), **{**ARGS, **kw})


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(trained_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "full"
    return out, run_sft(config(trained_model, out))


def test_full_tuning_writes_a_chat_model_that_loads_and_learns(full_run, trained_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, manifest = full_run
    assert manifest["stage"] == "sft" and manifest["method"] == "full" and manifest["global_step"] == 8
    for source, counts in manifest["data"]["counts"].items():
        dropped = sum(v for k, v in counts.items() if k.startswith("dropped"))
        assert counts["read"] == counts["kept"] + dropped, source
    tok = AutoTokenizer.from_pretrained(out / "final")
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert manifest["added_tokens"] and all(len(tok.tokenize(t)) == 1 for t in manifest["added_tokens"])
    assert model.get_input_embeddings().num_embeddings >= len(tok)
    ids = tok.apply_chat_template([{"role": "user", "content": "ភ្នំពេញជារាជធានីនៃប្រទេសអ្វី?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]
    rows = metrics(out)
    for lang in ("km", "en"):  # validation on held-out conversations of each language, at the start and the end
        steps = [r["step"] for r in rows if f"eval_{lang}_loss" in r]
        assert steps[0] == 0 and steps[-1] == 8, (lang, steps)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0], losses  # assistant-token loss falls on the conversations it trains on
    base = AutoModelForCausalLM.from_pretrained(trained_model)
    assert not torch.equal(base.get_input_embeddings().weight[:10], model.get_input_embeddings().weight[:10])
    # its manifest names its chat tokenizer, so the base's tokenizer (no role markers) is refused for it
    from tonsai.manifest import read_manifest, tokenizer_hash
    from tonsai.tokenizer.export import load_tokenizer

    assert read_manifest(out / "final")["tokenizer_sha256"] == tokenizer_hash(out / "final")
    with pytest.raises(StageError, match="is not the tokenizer"):
        load_tokenizer(trained_model, out / "final")


def test_lora_adapter_merges_into_a_plain_model_with_the_adapters_outputs(trained_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.sft.template import install_chat_template, resize_for_new_tokens

    out = tmp_path / "lora"
    manifest = run_sft(config(trained_model, out, method="lora", lora_rank=4, max_steps=4, save_steps=4,
                              learning_rate=5e-3))
    assert manifest["method"] == "lora"
    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "adapter" / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(out / "final")
    merged = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    base_tok = AutoTokenizer.from_pretrained(trained_model)
    base = AutoModelForCausalLM.from_pretrained(trained_model)
    resize_for_new_tokens(base, base_tok, install_chat_template(base_tok))
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of Cambodia?"},
                                   {"role": "assistant", "content": "Phnom Penh."}], return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        a, m = adapted(ids).logits, merged(ids).logits
    torch.testing.assert_close(m, a, atol=1e-4, rtol=1e-4)
    with torch.no_grad(), adapted.disable_adapter():
        before = adapted(ids).logits
    assert not torch.allclose(before, m, atol=1e-3)  # the adapter changed what the model says
    # a full run started over in that folder leaves no adapter of the old run beside its final/
    with pytest.raises(StageError, match="already holds"):
        run_sft(config(trained_model, out, max_steps=1))
    run_sft(config(trained_model, out, max_steps=1, save_steps=2, eval_steps=1, logging_steps=1, overwrite=True))
    assert (out / "final").is_dir() and not (out / "adapter").exists()


def test_kill_9_then_resume_auto_gives_the_uninterrupted_run(full_run, trained_model, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    cmd = [sys.executable, str(REPO / "scripts/train_sft.py"), *cli_args(trained_model, out)]

    def logged(step):
        return lambda: (out / "metrics.jsonl").is_file() and any(r.get("step") == step and "loss" in r
                                                                 for r in metrics(out))

    wait_and_kill(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                  lambda: (out / "checkpoint-4" / "checksums.json").is_file() and logged(6)())
    assert not (out / "final").exists()
    proc = subprocess.run(cmd + ["--resume-from", "auto"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint-4" in proc.stderr
    want = {r["step"]: r["loss"] for r in metrics(full_run[0]) if "loss" in r}
    got = {r["step"]: r["loss"] for r in metrics(out) if "loss" in r}
    assert got == pytest.approx(want, abs=1e-5)
    a, b = load_file(full_run[0] / "final" / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_refused_inputs_name_the_problem(full_run, trained_model, tmp_path):
    import shutil

    with pytest.raises(StageError, match="no such file"):
        run_sft(SftConfig(model_dir=str(trained_model), data=[str(tmp_path / "missing.jsonl")],
                          output_dir=str(tmp_path / "a"), device="cpu"))
    with pytest.raises(StageError, match="weight after '=' must be a positive number"):
        run_sft(SftConfig(model_dir=str(trained_model), data=[f"{DATA[0]}=-2"], output_dir=str(tmp_path / "b"),
                          device="cpu"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before claiming the folder
    # a checkpoint resumes only the run that saved it
    shutil.copytree(full_run[0], tmp_path / "other")
    with pytest.raises(StageError, match=r"started with other settings \(seed: then 0, now 1"):
        run_sft(config(trained_model, tmp_path / "other", seed=1, resume_from="auto"))
    with pytest.raises(StageError, match="not a checkpoint of an SFT run"):
        run_sft(config(trained_model, tmp_path / "c", resume_from=str(trained_model)))
    # named from another folder, too: its run's settings are checked, not skipped
    ckpt = sorted((tmp_path / "other").glob("checkpoint-*"))[-1]
    with pytest.raises(StageError, match=r"started with other settings \(seed: then 0, now 1"):
        run_sft(config(trained_model, tmp_path / "c2", seed=1, resume_from=str(ckpt)))
    pretraining = sorted(trained_model.parent.glob("checkpoint-*"))[-1]
    with pytest.raises(StageError, match="not a checkpoint of a tonsai SFT run"):
        run_sft(config(trained_model, tmp_path / "c3", resume_from=str(pretraining)))
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(StageError, match="no config.json"):
        run_sft(config(tmp_path / "not_a_model", tmp_path / "d"))
    with pytest.raises(ValueError, match="--validation-fraction"):
        config(trained_model, tmp_path / "e", validation_fraction=1.5)


def test_lora_under_deepspeed_resumes_exactly_from_a_checkpoint(trained_model, tmp_path):
    """LoRA under DeepSpeed ZeRO-2 (one CPU process, gloo): a run resumed from its step-2 checkpoint ends
    with the adapter and losses of the run that went through."""
    import shutil

    from safetensors.torch import load_file

    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    out = tmp_path / "through"
    cmd = [sys.executable, str(REPO / "scripts/train_sft.py"), *cli_args(
        trained_model, out, method="lora", lora_rank=4, max_steps=4, save_steps=2, eval_steps=2,
        deepspeed=str(REPO / "configs/deepspeed/zero2_h100.json"))]
    for run in (cmd, [c if c != str(out) else str(tmp_path / "resumed") for c in cmd] + ["--resume-from", "auto"]):
        if "--resume-from" in run:  # the second: the first's folder as it was when step 2 was saved
            shutil.copytree(out, tmp_path / "resumed", ignore=shutil.ignore_patterns("checkpoint-4", "final", "adapter"))
            (tmp_path / "resumed" / "manifest.json").unlink()
        proc = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint-2" in proc.stderr
    losses = [{r["step"]: r["loss"] for r in metrics(d) if "loss" in r} for d in (out, tmp_path / "resumed")]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5) and max(losses[0]) == 4
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (out, tmp_path / "resumed"))
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_conversation_too_long_for_the_block_is_counted_as_not_trained(trained_model, tmp_path):
    long_km = " ".join((SAMPLE / "km.txt").read_text(encoding="utf-8").split("\n")[:40])  # distinct sentences
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"messages": [{"role": "user", "content": "និយាយពីភ្នំពេញ"},
                                             {"role": "assistant", "content": long_km}]}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    manifest = run_sft(SftConfig(model_dir=str(trained_model), data=[DATA[1], f"{huge}=1"],
                                 output_dir=str(tmp_path / "out"), **{**ARGS, "max_steps": 2, "save_steps": 2,
                                                                        "eval_steps": 2}))
    data = manifest["data"]
    counts = data["counts"][str(huge)]
    assert counts["train_too_long"] == 1 and counts["train"] == 0  # kept by the data step, not trained
    assert data["train_packing"]["too_long"] == 1
    assert data["train_conversations"] == sum(c["train"] for c in data["counts"].values())
    assert data["train_packing"]["tokens_by_lang"] and sum(data["train_packing"]["tokens_by_lang"].values()) == \
        data["train_packing"]["tokens"]


def test_a_checkpoint_of_an_unfinished_sft_run_is_evaluated_with_its_bases_window(full_run, trained_model, tmp_path):
    """Mid-run there is no run manifest yet: the run file written at the start carries the base's
    window, so eval_model.py --compare can set a checkpoint beside the base model's report."""
    import shutil

    from tonsai.eval.run import run_window

    unfinished = tmp_path / "sft"
    shutil.copytree(full_run[0], unfinished, ignore=shutil.ignore_patterns("manifest.json", "final", "adapter"))
    ckpt = sorted(unfinished.glob("checkpoint-*"))[-1]
    block, stride, where = run_window(ckpt)
    assert (block, stride) == run_window(trained_model)[:2] and block is not None
    assert "sft_run.json" in where
