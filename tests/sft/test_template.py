"""The chat template: markers as single special tokens, a round trip through save_tokenizer and
AutoTokenizer with equal ids, idempotent installation, and embedding rows for the new tokens."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from tonsai.model.build import build_model, load_model_config
from tonsai.sft.template import (
    CHAT_TEMPLATE,
    END_TOKEN,
    MARKERS,
    ROLE_TOKENS,
    install_chat_template,
    resize_for_new_tokens,
    stop_token_ids,
)
from tonsai.tokenizer.export import save_tokenizer

from ..conftest import REPO

CONVERSATION = [
    {"role": "system", "content": "អ្នកជាជំនួយការដែលឆ្លើយដោយខ្លី។ Answer briefly."},
    {"role": "user", "content": "តើរាជធានីរបស់ប្រទេសកម្ពុជាគឺជាទីក្រុងអ្វី?"},
    {"role": "assistant", "content": "រាជធានីរបស់ប្រទេសកម្ពុជាគឺទីក្រុងភ្នំពេញ។"},
    {"role": "user", "content": "And in English?"},
    {"role": "assistant", "content": "The capital of Cambodia is Phnom Penh."},
]


def test_template_round_trip(sample_pipeline, tmp_path):
    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    n = len(tok)
    added = install_chat_template(tok)
    assert added == MARKERS and len(tok) == n + 4
    ids = tok.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == ("<|endoftext|><|system|>" + CONVERSATION[0]["content"] + "<|end|><|user|>" + CONVERSATION[1]["content"]
                    + "<|end|><|assistant|>" + CONVERSATION[2]["content"] + "<|end|><|user|>And in English?<|end|>"
                    "<|assistant|>The capital of Cambodia is Phnom Penh.<|end|>")
    for marker in MARKERS:  # one id each, also between ordinary text
        mid = tok.convert_tokens_to_ids(marker)
        assert mid >= n and tok.encode(marker, add_special_tokens=False) == [mid]
        assert mid in tok.encode(f"ក{marker}a", add_special_tokens=False)
    assert ids.count(tok.convert_tokens_to_ids(END_TOKEN)) == 5

    # what a user's chat call sends for the second answer is exactly the prefix the model trained on
    prompt = tok.apply_chat_template(CONVERSATION[:4], tokenize=True, add_generation_prompt=True)["input_ids"]
    assert prompt[-1] == tok.convert_tokens_to_ids(ROLE_TOKENS["assistant"]) and ids[:len(prompt)] == prompt

    save_tokenizer(tok, tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"] == ids
    assert install_chat_template(again) == [] and len(again) == len(tok)
    assert install_chat_template(tok) == [] and tok.chat_template == again.chat_template
    assert stop_token_ids(again) == [tok.convert_tokens_to_ids(END_TOKEN), tok.eos_token_id]


def _model(tok, tied: bool, rows: int | None = None):
    config = load_model_config(REPO / "configs/model/gpt2_tiny.json", tok)
    config.tie_word_embeddings = tied
    if rows:
        config.vocab_size = rows
    torch.manual_seed(0)
    return build_model(config)


def test_new_rows_are_the_mean(sample_pipeline):
    """A GPT-2 built by tonsai for the sample tokenizer (512 tokens, so 512 rows) grows to 576 rows
    (516 rounded up to 64), tied and untied; a model that already has padding rows is not resized,
    and the added tokens' rows (inside the padding) are set all the same."""
    base = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    n = len(base)
    for tied, rows in ((True, None), (False, None), (True, 576)):
        model = _model(base, tied, rows)
        old_in = model.get_input_embeddings().weight.detach().clone()
        old_out = model.get_output_embeddings().weight.detach().clone()
        tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
        added = install_chat_template(tok)
        resize_for_new_tokens(model, tok, added)
        new_in, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        assert new_in.shape[0] == 576 and model.config.vocab_size == 576
        assert (new_in.data_ptr() == new_out.data_ptr()) == tied
        ids = tok.convert_tokens_to_ids(added)
        assert ids == list(range(n, n + 4))
        for old, new in ((old_in, new_in), (old_out, new_out)):
            assert torch.equal(new[:n], old[:n])
            torch.testing.assert_close(new[ids], old[:n].mean(0).expand(4, -1), rtol=0, atol=1e-7)
            if rows:  # the padding rows past the added tokens are left alone
                assert torch.equal(new[n + 4:], old[n + 4:])
        if not tied:
            assert not torch.equal(new_in[ids[0]], new_out[ids[0]])  # each matrix gets its own mean
        logits = model(torch.tensor([[ids[1], 5, ids[2]]])).logits
        assert logits.shape == (1, 3, 576) and torch.isfinite(logits).all()


TF4_CHAT_PROBE = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps({"template": tok.chat_template, "special": tok.additional_special_tokens,
                  "ids": tok(sys.argv[2], add_special_tokens=False)["input_ids"]}))
"""


def test_chat_tokenizer_folder_loads_in_transformers_4(chat_tokenizer, tmp_path):
    """transformers 4.x reads the saved folder (markers as additional_special_tokens, the template in
    tokenizer_config.json) and encodes the rendered conversation to the same ids. (The cached 4.x
    environment has no jinja2, so 4.x tokenizes 5.x's rendering instead of rendering it itself.)"""
    import json
    import os
    import subprocess

    from ..tokenizer.test_export import _tf4_python

    save_tokenizer(chat_tokenizer, tmp_path / "tok")
    assert not (tmp_path / "tok" / "chat_template.jinja").exists()
    text = chat_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    proc = subprocess.run([str(_tf4_python()), "-c", TF4_CHAT_PROBE, str(tmp_path / "tok"), text], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["template"] == CHAT_TEMPLATE and got["special"] == MARKERS
    assert got["ids"] == chat_tokenizer.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]
