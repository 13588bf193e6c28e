import pytest
import torch

from tonsai.cli import StageError
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
