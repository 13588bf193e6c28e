import json
import logging

import pytest
import torch

from tonsai.errors import StageError
from tonsai.model.build import build_model, count_parameters, load_model_config, padded_vocab_size

from ..conftest import REPO


def test_500m_preset_really_has_about_half_a_billion_parameters():
    config = load_model_config(REPO / "configs/model/gpt2_500m.json")
    with torch.device("meta"):
        model = build_model(config)
    n = count_parameters(model)
    assert 0.50e9 <= n <= 0.56e9, n
    assert config.n_positions == 2048 and config.vocab_size % 64 == 0


def test_vocab_and_special_ids_come_from_the_tokenizer(sample_pipeline):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    config = load_model_config(REPO / "configs/model/gpt2_tiny.json", tok)
    assert config.vocab_size == padded_vocab_size(len(tok)) and config.vocab_size % 64 == 0
    assert config.eos_token_id == tok.eos_token_id and config.pad_token_id == tok.pad_token_id


def test_padded_vocab_size():
    assert padded_vocab_size(50257) == 50304
    assert padded_vocab_size(64) == 64


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"n_layer": 2}')
    with pytest.raises(StageError, match="model_type"):
        load_model_config(bad)
    bad.write_text('{"model_type": "gpt2",\n "n_layer": }')
    with pytest.raises(StageError, match="line 2"):
        load_model_config(bad)


@pytest.mark.parametrize("path", sorted((REPO / "configs/model").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_model_config_is_accepted_and_builds(path):
    config = load_model_config(path)
    with torch.device("meta"):
        model = build_model(config)
    assert count_parameters(model) > 0


def test_a_config_json_saved_by_transformers_is_accepted(tmp_path):
    """A model folder's config.json (with the keys transformers adds when saving) works as a preset."""
    for name in ("gpt2_tiny.json", "llama_tiny.json"):
        config = load_model_config(REPO / "configs/model" / name)
        config.save_pretrained(tmp_path / name)
        again = load_model_config(tmp_path / name / "config.json")
        assert again.to_dict() == config.to_dict()


def write_config(tmp_path, base: str, **changes):
    data = {**json.loads((REPO / "configs/model" / base).read_text()), **changes}
    for key in [k for k, v in changes.items() if v is DROP]:
        del data[key]
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    return path


DROP = object()


@pytest.mark.parametrize("base, changes, message", [
    ("gpt2_tiny.json", {"n_layr": 2}, "unknown key 'n_layr' (did you mean n_layer?)"),
    ("gpt2_tiny.json", {"num_hidden_layer": 2}, "unknown key 'num_hidden_layer' (did you mean num_hidden_layers?)"),
    ("llama_tiny.json", {"hidden_szie": 64}, "unknown key 'hidden_szie' (did you mean hidden_size?)"),
    ("llama_tiny.json", {"max_length": 512}, "unknown key 'max_length'"),
    ("gpt2_tiny.json", {"model_type": "gtp2"}, "unknown model_type 'gtp2' (did you mean gpt2?)"),
    ("gpt2_tiny.json", {"model_type": ["gpt2"]}, "unknown model_type ['gpt2']"),
])
def test_unknown_keys_name_the_closest_field(tmp_path, base, changes, message):
    path = write_config(tmp_path, base, **changes)
    with pytest.raises(StageError) as e:
        load_model_config(path)
    assert str(path) in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("base, changes, message", [
    ("gpt2_tiny.json", {"n_layer": -2}, "n_layer is -2; it must be a positive integer"),
    ("gpt2_tiny.json", {"n_head": 0}, "n_head is 0; it must be a positive integer"),
    ("gpt2_tiny.json", {"n_positions": -1}, "n_positions is -1"),
    ("gpt2_tiny.json", {"n_embd": 130}, "n_embd 130 is not divisible by n_head 4"),
    ("gpt2_tiny.json", {"n_embd": DROP, "hidden_size": 130}, "n_embd 130 is not divisible by n_head 4"),
    ("gpt2_tiny.json", {"resid_pdrop": float("nan")}, "resid_pdrop is nan; a dropout probability"),
    ("gpt2_tiny.json", {"attn_pdrop": -0.1}, "attn_pdrop is -0.1"),
    ("gpt2_tiny.json", {"embd_pdrop": 1.0}, "embd_pdrop is 1.0"),
    ("gpt2_tiny.json", {"layer_norm_epsilon": float("inf")}, "layer_norm_epsilon is inf"),
    ("gpt2_tiny.json", {"activation_function": "gelu_nw"}, "(did you mean gelu_new?)"),
    ("gpt2_tiny.json", {"n_layer": "2"}, "n_layer"),
    ("gpt2_tiny.json", {"hidden_size": 256}, "n_embd is given twice"),
    ("llama_tiny.json", {"num_hidden_layers": 0}, "num_hidden_layers is 0"),
    ("llama_tiny.json", {"intermediate_size": -352}, "intermediate_size is -352"),
    ("llama_tiny.json", {"hidden_size": 130}, "hidden_size 130 is not divisible by num_attention_heads 4"),
    ("llama_tiny.json", {"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    ("llama_tiny.json", {"hidden_size": 12, "intermediate_size": 32}, "rotary position embeddings need an even"),
    ("llama_tiny.json", {"attention_dropout": float("inf")}, "attention_dropout is inf"),
    ("llama_tiny.json", {"rope_theta": -1.0}, "rope_theta is -1.0"),
    ("llama_tiny.json", {"rms_norm_eps": 0}, "rms_norm_eps is 0"),
])
def test_impossible_values_are_refused_before_any_model_is_built(tmp_path, base, changes, message):
    path = write_config(tmp_path, base, **changes)
    with pytest.raises(StageError) as e:
        load_model_config(path)
    assert str(path) in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("name", ["gpt2_tiny.json", "llama_tiny.json"])
def test_every_preset_trains_with_the_causal_lm_loss_without_transformers_warning(name):
    from transformers.loss.loss_utils import ForCausalLMLoss

    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    try:
        for loss_type in ("as built", None):  # None: transformers' own lookup, so that the check can fail
            logging.Logger.warning_once.cache_clear()  # transformers warns once per process
            model = build_model(load_model_config(REPO / "configs/model" / name))
            if loss_type is None:
                model.loss_type = None
            x = torch.randint(0, model.config.vocab_size, (2, 16))
            warnings.clear()
            assert torch.isfinite(model(input_ids=x, labels=x).loss)
            assert model.loss_function is ForCausalLMLoss
            assert bool([w for w in warnings if "loss_type" in w]) == (loss_type is None)
    finally:
        logging.getLogger("transformers").removeHandler(handler)


@pytest.mark.parametrize("name", ["gpt2_tiny.json", "llama_tiny.json"])
def test_the_trainer_averages_the_loss_over_the_tokens_the_model_predicts(name, tmp_path):
    """With its loss named, GPT-2's training loss is the mean over predicted tokens (T - 1 a row), as
    Llama's and the evaluation's are; unnamed, the Trainer divided by T labels (0.1% low at T = 1024)."""
    from transformers import Trainer, TrainingArguments

    model = build_model(load_model_config(REPO / "configs/model" / name))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    batch = {"input_ids": x, "labels": x}
    n = trainer._get_num_items_in_batch([batch], torch.device("cpu"))  # what the training step divides by
    assert int(n) == 2 * 15
    model.eval()  # no dropout: the two forward passes below must see the same network
    with torch.no_grad():
        assert float(trainer.compute_loss(model, dict(batch), num_items_in_batch=n)) == pytest.approx(
            float(model(**batch).loss), rel=1e-6)
