"""Vocabulary transfer for continual pretraining with a new tokenizer (KHMER.md section 5).

Tokens present in both vocabularies (same token string) keep their embedding rows. Each new token
starts as the mean of the old embeddings of the old tokenizer's tokens for the new token's text
(Yamaguchi et al. 2024 found this beats random and FOCUS-style init in low-resource settings);
a token whose text the old tokenizer cannot encode (a lone byte, a special token) starts as the
mean of all old rows. An untied output head gets the same treatment; a tied one follows the input
embedding. Rows past the tokenizer (padding to a multiple of 64) start as the mean too.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TransferReport:
    copied: int
    initialized_from_subtokens: int
    initialized_from_mean: int


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def transfer_vocabulary(model, old_tokenizer, new_tokenizer, new_size: int) -> TransferReport:
    """Resize ``model``'s embeddings to ``new_size`` rows laid out for ``new_tokenizer``."""
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out_layer = model.get_output_embeddings()
    tied = old_out_layer is None or old_out_layer.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    old_out = None if tied else old_out_layer.weight.detach().clone()
    old_vocab = old_tokenizer.get_vocab()
    mean_in = old_in[: len(old_tokenizer)].mean(0)
    mean_out = None if tied else old_out[: len(old_tokenizer)].mean(0)

    new_in = mean_in.repeat(new_size, 1)
    new_out = None if tied else mean_out.repeat(new_size, 1)
    copied = from_sub = from_mean = 0
    for token, new_id in new_tokenizer.get_vocab().items():
        old_id = old_vocab.get(token)
        if old_id is not None and old_id < old_in.shape[0]:
            new_in[new_id] = old_in[old_id]
            if not tied:
                new_out[new_id] = old_out[old_id]
            copied += 1
            continue
        text = _token_text(new_tokenizer, new_id)
        ids = old_tokenizer(text, add_special_tokens=False)["input_ids"] if text and "\ufffd" not in text else []
        if ids:
            new_in[new_id] = old_in[ids].mean(0)
            if not tied:
                new_out[new_id] = old_out[ids].mean(0)
            from_sub += 1
        else:
            from_mean += 1
    model.resize_token_embeddings(new_size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(new_in)
        if not tied:
            model.get_output_embeddings().weight.copy_(new_out)
    if tied:
        model.tie_weights()
    model.config.vocab_size = new_size
    return TransferReport(copied, from_sub, from_mean)
