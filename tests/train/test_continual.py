"""Continual pretraining from a model folder (tonsai.train.continual; --resume-from MODEL_FOLDER): a
fresh schedule from the trained weights, the folder's config and tokenizer as defaults with the base
run's counts carried on, a disagreeing --model-config refused, and another tokenizer only with
--vocab-transfer."""

import dataclasses
import json
import math
import shutil

import pytest

from tests.conftest import REPO
from tests.train.runs import config, losses, rows
from tonsai.errors import StageError
from tonsai.train.config import TrainConfig
from tonsai.train.run import run_train


def test_continual_pretraining_from_a_model_folder(plain_run, sample_pipeline, tmp_path, caplog):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "cpt"
    with caplog.at_level("INFO", logger="tonsai.train.run"):
        manifest = run_train(config(sample_pipeline, out, steps=4, warmup=4, learning_rate=1e-3, logging_steps=1,
                                    eval_steps=4, save_steps=4, resume_from=str(plain_run[0] / "final")))
    assert manifest["start"] == "weights" and manifest["global_step"] == 4
    assert "continual pretraining: loading weights from" in caplog.text
    # a fresh schedule: the learning rate warms up again from the start instead of continuing the decay
    lrs = [lr for _, lr in losses(out, "learning_rate")]
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] <= 1e-3
    # it starts from the trained weights: the first loss is the trained model's, far below a fresh model's
    first_loss = losses(out)[0][1]
    assert first_loss < losses(plain_run[0])[0][1] - 0.5
    start = AutoModelForCausalLM.from_pretrained(plain_run[0] / "final")
    end = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not torch.equal(start.get_input_embeddings().weight, end.get_input_embeddings().weight)


def test_continual_pretraining_with_another_tokenizer_needs_vocab_transfer(plain_run, sample_pipeline, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

    new_tok = tmp_path / "tok700"
    run_train_tokenizer(TokenizerConfig(output_dir=str(new_tok), dataset_dir=str(sample_pipeline / "data"),
                                        vocab_size=700))
    cfg = config(sample_pipeline, tmp_path / "cpt", steps=2, resume_from=str(plain_run[0] / "final"))
    cfg.tokenizer_dir = str(new_tok)
    with pytest.raises(StageError, match="--vocab-transfer"):
        run_train(cfg)
    bare = tmp_path / "bare"  # a model folder without tokenizer files cannot be checked: refused too
    AutoModelForCausalLM.from_pretrained(plain_run[0] / "final").save_pretrained(bare)
    with pytest.raises(StageError, match="has no tokenizer to compare with"):
        run_train(config(sample_pipeline, tmp_path / "cpt0", steps=2, resume_from=str(bare)))
    cfg.vocab_transfer = True
    cfg.max_steps = 1
    cfg.learning_rate = 1e-12  # keep the weights where the transfer put them
    run_train(cfg)
    old_model = AutoModelForCausalLM.from_pretrained(plain_run[0] / "final")
    new_model = AutoModelForCausalLM.from_pretrained(tmp_path / "cpt" / "final")
    old_tok, new = AutoTokenizer.from_pretrained(plain_run[0] / "final"), AutoTokenizer.from_pretrained(new_tok)
    assert new_model.config.vocab_size == 704 and new_model.get_input_embeddings().num_embeddings == 704
    old_e, new_e = old_model.get_input_embeddings().weight, new_model.get_input_embeddings().weight
    shared = [t for t in new.get_vocab() if t in old_tok.get_vocab()]
    assert len(shared) > 300
    for t in shared[:50]:
        assert torch.allclose(new_e[new.get_vocab()[t]], old_e[old_tok.get_vocab()[t]], atol=1e-6)
    fresh = [t for t in new.get_vocab() if t not in old_tok.get_vocab()]
    t = fresh[0]
    sub = old_tok(new.decode([new.get_vocab()[t]]), add_special_tokens=False)["input_ids"]
    assert torch.allclose(new_e[new.get_vocab()[t]], old_e[sub].mean(0), atol=1e-6)


def test_continual_pretraining_reads_config_and_tokenizer_from_the_model_folder(trained_model, sample_pipeline,
                                                                                tmp_path):
    """No --model-config, no --tokenizer-dir: both come from the model folder, the manifest records
    them, and steps and tokens continue the base run's (60 steps of 8 x 128 tokens)."""
    base = json.loads((trained_model / "manifest.json").read_text())
    assert (base["step_total"], base["tokens_total"]) == (60, 60 * 8 * 128)
    out = tmp_path / "cpt"
    cfg = TrainConfig(dataset_dir=str(sample_pipeline / "data"), output_dir=str(out), resume_from=str(trained_model),
                      block_size=128, micro_batch_size=8, max_tokens=4096, logging_steps=1, eval_steps=2, save_steps=2,
                      warmup=0.5, learning_rate=1e-3, device="cpu", dataloader_workers=0, report_to=["none"])
    manifest = run_train(cfg)
    assert manifest["start"] == "weights" and manifest["global_step"] == 4
    assert manifest["config"]["model_config"] == str(trained_model / "config.json")
    assert manifest["config"]["tokenizer_dir"] == manifest["tokenizer_dir"] == str(trained_model)
    used = manifest["model_config_used"]
    assert (used["n_layer"], used["n_embd"], used["n_positions"]) == (2, 128, 256)
    assert manifest["base_model"] == {"model": str(trained_model), "steps": 60, "tokens": 61440}
    assert (manifest["step_total"], manifest["tokens_total"]) == (64, 61440 + 4096)
    for r in rows(out):
        assert r["step_total"] == r["step"] + 60 and r["tokens_total"] == r["tokens_seen"] + 61440
    # the continued model's own manifest carries the totals on, for the next continuation
    final = json.loads((out / "final" / "manifest.json").read_text())
    assert (final["step_total"], final["tokens_total"]) == (64, 65536)
    # the first loss is the trained model's (its tokenizer was used as is), far below a fresh model's 7
    assert losses(out)[0][1] < math.log(1024) - 1

    # a disconnect after checkpoint-2: the same command with --resume-from auto resumes it, with the base
    # folder's config and tokenizer again and the base's counts still added
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "checkpoint-4")
    resumed = run_train(dataclasses.replace(cfg, resume_from="auto"))
    assert resumed["start"] == "checkpoint" and resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["config"]["tokenizer_dir"] == str(trained_model)
    assert resumed["base_model"] == manifest["base_model"]
    assert (resumed["step_total"], resumed["tokens_total"]) == (64, 65536)
    assert [r["step_total"] for r in rows(out) if "loss" in r] == [61, 62, 63, 64]


def test_a_model_config_that_disagrees_with_the_model_folder_is_refused(trained_model, sample_pipeline, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(StageError, match=r"gpt2_500m.json: n_layer is 24, but the model in --resume-from .* has 2"):
        run_train(TrainConfig(dataset_dir=str(sample_pipeline / "data"), output_dir=str(out),
                              resume_from=str(trained_model), model_config=str(REPO / "configs/model/gpt2_500m.json"),
                              device="cpu", max_steps=1))
    assert not (out / "tokens").exists()


def test_a_model_config_with_the_same_architecture_sets_the_other_fields(trained_model, tmp_path):
    from transformers import AutoConfig

    from tonsai.train.continual import model_config_overrides

    tiny = json.loads((REPO / "configs/model/gpt2_tiny.json").read_text())
    path = tmp_path / "no_dropout.json"
    path.write_text(json.dumps({**tiny, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "vocab_size": 99}))
    folder = AutoConfig.from_pretrained(trained_model)
    assert model_config_overrides(str(path), folder, str(trained_model)) == {"resid_pdrop": 0.0, "embd_pdrop": 0.0}
    path.write_text(json.dumps({**tiny, "n_embd": 256}))
    with pytest.raises(StageError, match="n_embd is 256, but .* has 128"):
        model_config_overrides(str(path), folder, str(trained_model))
