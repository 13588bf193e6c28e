import pytest

from tonsai.model.build import load_model_config
from tonsai.model.cost import GPU_PEAK_BF16, ModelShape, gpu_key, mfu, zero2_memory_gb
from tonsai.model.plan import PlanConfig, plan, render

from ..conftest import REPO


def test_flops_per_token_by_hand():
    config = load_model_config(REPO / "configs/model/gpt2_tiny.json")  # 2 x 128, vocab 1024, ctx 256
    s = ModelShape.from_config(config)
    d, layers, v, ctx = 128, 2, 1024, 256
    per_layer = 12 * d * d + 13 * d  # attention and MLP weights and biases, two layer norms
    n = v * d + ctx * d + layers * per_layer + 2 * d  # + final layer norm; head tied to the embedding
    assert s.parameters == n and s.position_parameters == ctx * d
    assert s.flops_per_token() == 6 * (n - ctx * d) + 12 * layers * d * ctx


def test_llama_preset_is_about_half_a_billion_with_no_position_table():
    s = ModelShape.from_config(load_model_config(REPO / "configs/model/llama_480m.json"))
    assert 0.45e9 < s.parameters < 0.52e9 and s.position_parameters == 0


def test_gpu_names_and_mfu():
    assert gpu_key("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_key("NVIDIA H100 PCIe") == "h100-pcie"
    assert gpu_key("NVIDIA A100-SXM4-40GB") == "a100"
    assert gpu_key("Tesla T4") == "t4"
    assert gpu_key("Some CPU") is None
    assert mfu(100_000, 4e9, GPU_PEAK_BF16["h100"]) == pytest.approx(100_000 * 4e9 / 989e12)


def test_zero2_memory_splits_optimizer_state_over_ranks():
    s = ModelShape.from_config(load_model_config(REPO / "configs/model/gpt2_500m.json"))
    one, eight = zero2_memory_gb(s, 8, 1), zero2_memory_gb(s, 8, 8)
    assert one["adam_moments_fp32"] == pytest.approx(8 * eight["adam_moments_fp32"])
    assert one["weights_bf16"] == eight["weights_bf16"]
    assert zero2_memory_gb(s, 8, 1, activation_checkpointing=True)["activations"] < one["activations"] / 10


def test_planner_for_the_500m_model_on_one_h100():
    cfg = PlanConfig(model_config=str(REPO / "configs/model/gpt2_500m.json"), gpu="h100", tokens=10e9, mfu=0.45)
    p = plan(cfg)
    assert p["tokens_per_step"] == 8 * 16 * 2048
    assert p["fits"]
    assert 100_000 < p["tokens_per_s"] < 125_000
    assert p["hours"] == pytest.approx(10e9 / p["tokens_per_s"] / 3600)
    assert "tokens/s at 45% MFU" in render(cfg, p)
    big = plan(PlanConfig(model_config=str(REPO / "configs/model/gpt2_500m.json"), gpu="t4", micro_batch_size=64))
    assert not big["fits"]


def test_the_planner_refuses_a_sequence_longer_than_the_context():
    """Its command passes --seq-len as --block-size, which train_gpt2.py refuses past the context."""
    from tonsai.errors import StageError

    tiny = str(REPO / "configs/model/gpt2_tiny.json")
    with pytest.raises(StageError, match="--seq-len 4096 must be between 1 and the model's context length 256"):
        plan(PlanConfig(model_config=tiny, seq_len=4096, tokens=1e6))
    cfg = PlanConfig(model_config=tiny, seq_len=128, tokens=1e6)
    assert "--block-size 128" in render(cfg, plan(cfg))
