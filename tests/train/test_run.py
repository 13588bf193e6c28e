"""The training stage end to end (tonsai.train.run): a plain run's model, metrics and manifest, training
from a --tokens-dir, a Llama-style model (--save-total-limit, --gradient-checkpointing), --torch-compile
against eager, and --liger-kernel (refused where it cannot run; Liger's modules in the trained model)."""

import json

import pytest

from tests.conftest import REPO
from tests.train.runs import config, losses
from tonsai.errors import StageError
from tonsai.train.run import run_train


def test_plain_run_writes_model_metrics_and_manifest(plain_run):
    from transformers import AutoModelForCausalLM

    out, manifest = plain_run
    assert manifest["stage"] == "train" and manifest["global_step"] == 12
    assert manifest["parameters"] > 0
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert model.config.vocab_size % 64 == 0
    assert (out / "final" / "model.safetensors").is_file()
    assert json.loads((out / "final" / "manifest.json").read_text())["stage"] == "model"
    for lang in ("km", "en"):
        curve = losses(out, f"eval_{lang}_loss")
        assert curve[0][0] == 0 and curve[-1][0] == 12
        assert curve[-1][1] < curve[0][1]
        assert losses(out, f"eval_{lang}_bpb")
    assert all(r[1] > 0 for r in losses(out, "tokens_per_s"))
    # tokens seen per language (by the language of each token's document) add up to all tokens seen
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    for r in train_rows:
        assert r["tokens_seen_km"] + r["tokens_seen_en"] == r["tokens_seen"] == r["step"] * 4 * 64
    assert 0 < train_rows[-1]["tokens_seen_km"] < train_rows[-1]["tokens_seen"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard by default, offline


def test_train_from_a_tokens_dir_and_refuse_another_tokenizer(sample_pipeline, tmp_path):
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
    from tonsai.tokenizer.pack import TokenizeConfig, run_tokenize

    run_tokenize(TokenizeConfig(str(sample_pipeline / "data"), str(sample_pipeline / "tok"), str(tmp_path / "tokens"), 2))
    manifest = run_train(config(sample_pipeline, tmp_path / "run", steps=2, tokens_dir=str(tmp_path / "tokens"),
                                eval_max_tokens=100))
    assert manifest["global_step"] == 2 and not (tmp_path / "run" / "tokens").exists()
    # --eval-max-tokens: validation scores the first 100 tokens of each language
    assert {n for _, n in losses(tmp_path / "run", "eval_km_tokens")} == {100}
    assert {n for _, n in losses(tmp_path / "run", "eval_en_tokens")} == {100}
    other = tmp_path / "other_tok"
    run_train_tokenizer(TokenizerConfig(output_dir=str(other), dataset_dir=str(sample_pipeline / "data"), vocab_size=300))
    bad = config(sample_pipeline, tmp_path / "run2", steps=2, tokens_dir=str(tmp_path / "tokens"))
    bad.tokenizer_dir = str(other)
    with pytest.raises(StageError, match="another tokenizer"):
        run_train(bad)


def test_llama_style_model_trains(sample_pipeline, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from transformers import PreTrainedModel

    cfg = config(sample_pipeline, tmp_path / "llama", steps=4, save_steps=2, save_total_limit=1)
    cfg.model_config = str(REPO / "configs/model/llama_tiny.json")
    manifest = run_train(cfg)
    assert manifest["model_type"] == "llama" and manifest["global_step"] == 4
    # --save-total-limit 1: checkpoint-2 was written and then removed for checkpoint-4
    assert sorted(p.name for p in (tmp_path / "llama").glob("checkpoint-*")) == ["checkpoint-4"]

    # --gradient-checkpointing: really switched on, and the same losses (it recomputes, it does not change math)
    enabled = []
    original = PreTrainedModel.activation_checkpointing_enable

    def spy(self, *a, **kw):
        enabled.append(type(self).__name__)
        return original(self, *a, **kw)

    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", spy)
    gc = config(sample_pipeline, tmp_path / "llama_gc", steps=4, save_steps=2, gradient_checkpointing=True)
    gc.model_config = cfg.model_config
    run_train(gc)
    assert enabled == ["LlamaForCausalLM"]
    for (s1, a), (s2, b) in zip(losses(tmp_path / "llama"), losses(tmp_path / "llama_gc")):
        assert s1 == s2 and a == pytest.approx(b, rel=1e-5)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "llama" / "final")
    assert model.config.num_key_value_heads == 2 and model.config.vocab_size % 64 == 0
    rows = [json.loads(x) for x in (tmp_path / "llama" / "metrics.jsonl").read_text().splitlines()]
    assert any("tokens_per_s" in r for r in rows) and not any("mfu" in r for r in rows)  # no MFU on a CPU


def test_liger_kernel_is_refused_where_it_cannot_run():
    from tonsai.train.run import check_liger

    assert "CUDA GPU" in check_liger("llama", use_cpu=True)
    assert "no kernels for 'gpt2'" in check_liger("gpt2", use_cpu=False)
    assert check_liger("llama", use_cpu=False) is None


LLAMA_TINY = str(REPO / "configs/model/llama_tiny.json")  # no dropout: compiled and eager runs draw no random masks


def test_torch_compile_trains_the_compiled_model_with_the_eager_losses(sample_pipeline, tmp_path):
    """--torch-compile: Dynamo captures the model's graphs during the run (its counters are empty after
    the eager run and not after the compiled one), and the training and validation losses equal the
    eager run's within 1e-4 relative (inductor's CPU kernels sum float32 in another order)."""
    from torch._dynamo.utils import counters

    def run(name, **kw):
        run_train(config(sample_pipeline, tmp_path / name, steps=3, eval_steps=3, save_steps=100, logging_steps=1,
                         model_config=LLAMA_TINY, **kw))
        return {key: losses(tmp_path / name, key) for key in ("loss", "eval_km_loss", "eval_en_loss")}

    counters.clear()
    eager = run("eager")
    assert not counters["stats"]["unique_graphs"]
    compiled = run("compiled", torch_compile=True)
    assert counters["stats"]["unique_graphs"] >= 1 and counters["stats"]["calls_captured"] > 0
    for key in eager:
        assert [s for s, _ in compiled[key]] == [s for s, _ in eager[key]] and eager[key]
        assert [v for _, v in compiled[key]] == pytest.approx([v for _, v in eager[key]], rel=1e-4), key


class _Stop(Exception):
    pass


def test_liger_kernel_puts_ligers_modules_into_the_model_the_trainer_trains(sample_pipeline, tmp_path, monkeypatch):
    """Liger's kernels are Triton, CUDA only, so a CPU run is refused (test above) and cannot show the
    kernels running. Past that refusal, --liger-kernel reaches the Trainer, which swaps the Llama model's
    RMSNorm, SwiGLU MLP and loss for Liger's before its first step: checked on the model the training
    loop receives (stopped there)."""
    pytest.importorskip("liger_kernel")
    import tonsai.train.run as train_run
    from tonsai.train.trainer import TonsaiTrainer

    monkeypatch.setattr(train_run, "check_liger", lambda model_type, use_cpu: None)
    seen = {}

    def stop(self, *args, **kwargs):
        seen["model"] = self.model
        raise _Stop

    monkeypatch.setattr(TonsaiTrainer, "_inner_training_loop", stop)
    with pytest.raises(_Stop):
        run_train(config(sample_pipeline, tmp_path / "run", steps=2, model_config=LLAMA_TINY, liger_kernel=True))
    model = seen["model"]
    assert model.model.norm.forward.__module__ == "liger_kernel.transformers.rms_norm"
    assert all(layer.mlp.forward.__module__ == "liger_kernel.transformers.swiglu" for layer in model.model.layers)
    assert model.forward.__module__.startswith("liger_kernel.transformers.model.llama")
