"""A tokenizer trained by tonsai on the sample corpus, with the chat template installed."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def chat_tokenizer(sample_pipeline):
    from transformers import AutoTokenizer

    from tonsai.sft.template import install_chat_template

    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    install_chat_template(tok)
    return tok
