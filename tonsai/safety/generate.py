"""Generations of the model under test for the prompt set, with :mod:`tonsai.eval.generate`.

Greedy decoding (the same answer on every run, so two checks of one model agree), up to
``max_new_tokens`` tokens or the end-of-text token, not cut at a newline: an answer may run over
several lines.

- plain (a base model): each prompt is read as the start of a document, as the prompt suites do;
- ``--chat``: the prompt is the user turn of a one-message conversation rendered by the tokenizer's
  chat template (``apply_chat_template(..., add_generation_prompt=True)``), token ids as the
  template gives them, so role markers stay single special tokens.
"""

from __future__ import annotations

from pathlib import Path

from tonsai.errors import StageError
from tonsai.eval.generate import generate_greedy, generate_greedy_ids
from tonsai.safety.prompts import Prompt


def chat_ids(tokenizer, prompts: list[Prompt], tok_dir: Path) -> list[list[int]]:
    if not getattr(tokenizer, "chat_template", None):
        raise StageError(f"--chat: the tokenizer in {tok_dir} has no chat template (tokenizer_config.json "
                         "'chat_template'); leave out --chat for a base model, or pass an instruction-tuned model")
    return [list(tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True,
                                               return_dict=True)["input_ids"]) for p in prompts]


def generate(model, tokenizer, prompts: list[Prompt], *, chat: bool, tok_dir: Path, max_new_tokens: int,
             batch_size: int, device: str) -> list[str]:
    """One greedy generation per prompt, in the prompts' order."""
    kwargs = dict(max_new_tokens=max_new_tokens, stop=(), batch_size=batch_size, device=device,
                  progress="safety prompts")
    if chat:
        return generate_greedy_ids(model, tokenizer, chat_ids(tokenizer, prompts, tok_dir), **kwargs)
    return generate_greedy(model, tokenizer, [p.prompt for p in prompts], **kwargs)
