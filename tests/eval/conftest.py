"""Fixtures shared by the evaluation tests."""

import pytest


@pytest.fixture(scope="module")
def model_and_tok(trained_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(trained_model).eval(), AutoTokenizer.from_pretrained(trained_model)
