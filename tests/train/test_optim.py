"""--optimizer muon (tonsai.train.optim): Muon on the hidden matrices, AdamW on the rest."""

import copy
import json
import shutil

import pytest
import torch

from tests.train.runs import ZERO2, config, losses
from tonsai.train.optim import MUON_FLAG, MuonAdamW, tag_muon_parameters


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_layer=2, n_embd=32, n_head=2))


def test_only_hidden_matrices_get_muon():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tiny_gpt2()
    tag_muon_parameters(model)
    muon = {n for n, p in model.named_parameters() if getattr(p, MUON_FLAG)}
    assert muon == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                    for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    n_muon, n_adam = tag_muon_parameters(llama)
    muon = {n.split(".")[-2] for n, p in llama.named_parameters() if getattr(p, MUON_FLAG)}
    assert muon == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert n_adam == 2 * 64 * 32 + 3 * 32  # untied embedding and head, three norms


def _step(model, opt, seed):
    torch.manual_seed(seed)
    x = torch.randint(0, 64, (2, 16))
    opt.zero_grad()
    model(input_ids=x, labels=x).loss.backward()
    opt.step()


def test_each_half_is_exactly_its_torch_optimizer_and_state_round_trips():
    model = tiny_gpt2()
    tag_muon_parameters(model)
    ref = copy.deepcopy(model)
    tag_muon_parameters(ref)  # deepcopy does not carry the tags
    opt = MuonAdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    ref_muon = torch.optim.Muon([p for p in ref.parameters() if getattr(p, MUON_FLAG)], lr=0.01, weight_decay=0.1,
                                momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw")
    ref_adam = torch.optim.AdamW([p for p in ref.parameters() if not getattr(p, MUON_FLAG)], lr=0.01,
                                 weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)

    class Both:
        def zero_grad(self):
            ref_muon.zero_grad()
            ref_adam.zero_grad()

        def step(self):
            ref_muon.step()
            ref_adam.step()

    for seed in range(3):
        _step(model, opt, seed)
        _step(ref, Both(), seed)
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), tiny_gpt2().parameters()))

    # a scheduler changes both halves' learning rate through the shared groups
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    assert all(g["lr"] == 0.005 for g in opt._muon.param_groups + opt._adam.param_groups)
    del sched

    # save, reload into a fresh optimizer, continue: identical to continuing the original
    state = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(model)
    tag_muon_parameters(twin)
    twin_opt = MuonAdamW(twin.parameters(), lr=0.01, weight_decay=0.1)
    twin_opt.load_state_dict(state)
    assert twin_opt._muon.state is twin_opt.state and twin_opt._muon.param_groups[0] is twin_opt.param_groups[0]
    _step(model, opt, 7)
    _step(twin, twin_opt, 7)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_untagged_parameters_are_refused():
    with pytest.raises(ValueError, match="tag_muon_parameters"):
        MuonAdamW(tiny_gpt2().parameters())


def test_training_with_muon_learns_and_resumes_exactly(sample_pipeline, tmp_path):
    from tonsai.train.run import run_train

    out = tmp_path / "muon"
    manifest = run_train(config(sample_pipeline, out, optimizer="muon", learning_rate=2e-3))
    assert manifest["global_step"] == 12
    rows = losses(out)
    saved = torch.load(out / "checkpoint-12" / "optimizer.pt", weights_only=True)
    assert sorted(g["use_muon"] for g in saved["param_groups"]) == [False, False, True]  # decay/no-decay AdamW
    assert any("momentum_buffer" in s for s in saved["state"].values())
    assert rows[-1][1] < rows[0][1] - 0.3, rows
    # crash after checkpoint-6; resuming restores the Muon momentum and AdamW moments
    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.rmtree(again / "checkpoint-12")
    shutil.rmtree(again / "final")
    run_train(config(sample_pipeline, again, optimizer="muon", learning_rate=2e-3, resume_from="auto"))
    resumed, uninterrupted = dict(losses(again)), dict(rows)
    for step in (8, 10, 12):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-5)
    assert "optimizer" in json.loads((out / "manifest.json").read_text())["config"]


def test_muon_under_deepspeed_is_refused_with_the_reason(sample_pipeline, tmp_path):
    with pytest.raises(ValueError, match="flattened partitions"):
        config(sample_pipeline, tmp_path, optimizer="muon", deepspeed=ZERO2)
