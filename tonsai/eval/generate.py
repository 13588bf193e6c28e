"""Batched greedy generation and batched log-likelihood scoring for prompt suites.

Both functions take already normalized text. Every sequence starts with the tokenizer's end-of-text
token, the way training packs documents (``<eot> doc <eot> doc``), so a prompt is read as the start
of a document.

- :func:`generate_greedy` pads on the left (GPT-2 has absolute positions: position ids are taken from
  the attention mask, so a padded row sees the same positions as the row alone), stops a row at the
  end-of-text token or once its new text contains a stop string (:class:`StopOnStrings`), and cuts
  the text at the first stop string. Prompts longer than the context minus ``max_new_tokens`` keep
  their last tokens (the instruction and the item are at the end of a few-shot prompt).
- :func:`loglikelihood` returns, per ``(context, continuation)`` pair, the summed log-probability of
  the continuation's tokens given the context (lm-evaluation-harness's ``loglikelihood``), and
  whether greedy decoding would have produced the continuation. The pair is tokenized as one
  string and split at the first token that reaches into the continuation, so a merge across the
  boundary does not change the tokenization the model saw in training.

The model's dtype and device are used as they are (bf16 on a GPU is the caller's choice); logits are
cast to float32 before the softmax.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteriaList

from tonsai.model.build import context_length as config_context_length


class StopOnStrings:
    """A transformers ``StoppingCriteria``: a row is done once its generated text contains a stop string.

    Returns one bool per row (transformers >= 4.39 stops rows individually)."""

    def __init__(self, tokenizer, stop: Sequence[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.stop:
            return done
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        for i, text in enumerate(texts):
            done[i] = any(s in text for s in self.stop)
        return done


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    end = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < end:
                end = i
    return text[:end]


def context_length(model) -> int:
    return config_context_length(model.config)


def _batches(n: int, batch_size: int, order: list[int]):
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def generate_greedy(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64,
                    stop: Sequence[str] = ("\n",), batch_size: int = 8, device: str = "cpu",
                    progress: str | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (text after the prompt, cut at the first stop string).

    Prompts are batched longest-first (less padding); the output order is the input order."""
    encoded = tokenizer(list(prompts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return generate_greedy_ids(model, tokenizer, [[tokenizer.eos_token_id] + ids for ids in encoded],
                               max_new_tokens, stop, batch_size, device, progress)


def generate_greedy_ids(model, tokenizer, encoded: Sequence[list[int]], max_new_tokens: int = 64,
                        stop: Sequence[str] = ("\n",), batch_size: int = 8, device: str = "cpu",
                        progress: str | None = None, stop_ids: Sequence[int] = ()) -> list[str]:
    """:func:`generate_greedy` for prompts given as token ids, used as they are (e.g. a chat template's
    ``apply_chat_template`` output, whose special tokens plain text would not reproduce). A
    generation also ends at any of ``stop_ids`` (e.g. the chat template's end-of-turn token)."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    eot = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    room = context_length(model) - max_new_tokens
    if room < 2:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in a context of "
                         f"{context_length(model)} tokens")
    encoded = [list(ids)[-room:] for ids in encoded]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    model.eval()
    with torch.no_grad():
        for rows in tqdm(list(_batches(len(order), batch_size, order)), desc=progress,
                         disable=progress is None, leave=False):
            width = max(len(encoded[r]) for r in rows)
            inp = torch.full((len(rows), width), pad, dtype=torch.long)
            att = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):
                ids = encoded[r]
                inp[j, width - len(ids):] = torch.tensor(ids)
                att[j, width - len(ids):] = 1
            # positions count real tokens only: the first real token of every row is position 0
            pos = (att.cumsum(-1) - 1).clamp(min=0)
            inp, att, pos = inp.to(device), att.to(device), pos.to(device)
            gen = model.generate(
                input_ids=inp, attention_mask=att, position_ids=pos, do_sample=False, num_beams=1,
                max_new_tokens=max_new_tokens, eos_token_id=list(dict.fromkeys([eot, *stop_ids])), pad_token_id=pad,
                stopping_criteria=StoppingCriteriaList([StopOnStrings(tokenizer, stop, width)]),
                temperature=None, top_p=None, top_k=None)
            for j, r in enumerate(rows):
                new = gen[j, width:].tolist()
                ends = [new.index(t) for t in (eot, *stop_ids) if t in new]
                if ends:
                    new = new[:min(ends)]
                text = tokenizer.decode(new, skip_special_tokens=True)
                out[r] = cut_at_stop(text, stop)
    return out


def _split_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and ``continuation`` as the whole string tokenizes."""
    whole = tokenizer(context + continuation, add_special_tokens=False, split_special_tokens=True,
                      return_offsets_mapping=True)
    ids, offsets = whole["input_ids"], whole["offset_mapping"]
    cut = len(ids)
    for i, (start, end) in enumerate(offsets):
        if end > len(context):
            cut = i
            break
    if cut == len(ids):  # the continuation is empty or swallowed: score it as tokenized alone
        cont = tokenizer(continuation, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return ids, cont
    return ids[:cut], ids[cut:]


def loglikelihood(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                  device: str = "cpu", progress: str | None = None) -> list[tuple[float, bool]]:
    """(sum of log-probabilities of the continuation's tokens, greedy match) per (context, continuation).

    The context is left-truncated when context + continuation exceed the model's context length."""
    eot = tokenizer.eos_token_id
    pairs_ids = []
    for context, continuation in pairs:
        ctx, cont = _split_pair(tokenizer, context, continuation)
        if not cont:
            raise ValueError(f"empty continuation after {context[-40:]!r}")
        pairs_ids.append(([eot] + ctx, cont))
    return loglikelihood_ids(model, tokenizer, pairs_ids, batch_size, device, progress)


def loglikelihood_ids(model, tokenizer, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 8,
                      device: str = "cpu", progress: str | None = None) -> list[tuple[float, bool]]:
    """:func:`loglikelihood` for (context ids, continuation ids) pairs, used as they are (the context
    starts with whatever the caller put first: an end-of-text, or a chat template's own tokens)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    limit = context_length(model)
    seqs: list[tuple[list[int], int]] = []  # (ids, number of continuation tokens at the end)
    for ctx, cont in pairs:
        ids = (list(ctx) + list(cont))[-(limit + 1):]  # the last token is only a target
        if len(ids) - 1 < len(cont):
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit in a context of {limit}")
        seqs.append((ids, len(cont)))
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
    model.eval()
    with torch.no_grad():
        for rows in tqdm(list(_batches(len(order), batch_size, order)), desc=progress,
                         disable=progress is None, leave=False):
            width = max(len(seqs[r][0]) - 1 for r in rows)
            inp = torch.full((len(rows), width), pad, dtype=torch.long)
            att = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):  # right padding: positions start at 0 in every row
                ids = seqs[r][0][:-1]
                inp[j, :len(ids)] = torch.tensor(ids)
                att[j, :len(ids)] = 1
            logits = model(input_ids=inp.to(device), attention_mask=att.to(device)).logits
            for j, r in enumerate(rows):
                ids, n_cont = seqs[r]
                n_in = len(ids) - 1
                target = torch.tensor(ids[-n_cont:], device=logits.device)
                # logits at t predict token t+1; only the continuation's rows are softmaxed (on the device)
                rows_logp = torch.log_softmax(logits[j, n_in - n_cont:n_in].float(), dim=-1)
                total = rows_logp.gather(-1, target[:, None]).sum().item()
                greedy = bool((rows_logp.argmax(-1) == target).all())
                out[r] = (total, greedy)
    return out
