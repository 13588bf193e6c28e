"""Generations of the model under test for the prompt set, with :mod:`tonsai.eval.generate`.

Greedy decoding (the same answer on every run, so two checks of one model agree), up to
``max_new_tokens`` tokens or the end-of-text token, not cut at a newline: an answer may run over
several lines.

- plain (a base model): each prompt is read as the start of a document, as the prompt suites do;
- ``--chat``: the prompt is the user turn of a one-message conversation rendered by the tokenizer's
  chat template (``apply_chat_template(..., add_generation_prompt=True)``), token ids as the
  template gives them, so role markers stay single special tokens; the answer ends at the template's
  end-of-turn token (``<|end|>`` for models tuned by train_sft.py), as a chat user would see it.
"""

from __future__ import annotations

from pathlib import Path

from tonsai.eval.generate import generate_greedy, generate_greedy_ids
from tonsai.safety.prompts import Prompt
from tonsai.sft.template import chat_prompt_ids, stop_token_ids


def generate(model, tokenizer, prompts: list[Prompt], *, chat: bool, tok_dir: Path, max_new_tokens: int,
             batch_size: int, device: str) -> list[str]:
    """One greedy generation per prompt, in the prompts' order."""
    kwargs = dict(max_new_tokens=max_new_tokens, stop=(), batch_size=batch_size, device=device,
                  progress="safety prompts")
    if chat:
        ids = [chat_prompt_ids(tokenizer, p.prompt, where=f"the tokenizer in {tok_dir}") for p in prompts]
        return generate_greedy_ids(model, tokenizer, ids, stop_ids=stop_token_ids(tokenizer), **kwargs)
    return generate_greedy(model, tokenizer, [p.prompt for p in prompts], **kwargs)
