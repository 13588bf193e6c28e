"""Per-language loss, perplexity, bits per byte and bits per character over sliding windows.

Documents of one language are joined the way training packs them: ``<eot> doc1 <eot> doc2 <eot>``.
This is the one definition of per-language loss in tonsai: training's validation scores each
language's validation split as one such stream (in the split's order), and eval_model.py does the
same for a dataset split (:func:`score_documents`), reporting each source as its share of the
language's stream rather than as a stream of its own.
Windows of ``block_size`` tokens advance by ``stride``; each token is scored once, in the first
window that reaches it, with up to ``block_size - stride`` tokens of left context. Every document
token and each end-of-text after a document is predicted.

    loss            = total NLL (nats) / predicted tokens
    perplexity      = exp(loss)
    bits_per_byte   = total NLL / ln 2 / (UTF-8 bytes of the documents + 1 per end-of-text)
    bits_per_char   = total NLL / ln 2 / (characters of the documents + 1 per end-of-text)

Bits per byte compares models with different tokenizers within one language; it does not compare
Khmer with English (a Khmer character is 3 bytes, an English letter 1).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tonsai.model.build import context_length


@dataclasses.dataclass
class LanguageScore:
    documents: int
    tokens: int
    bytes: int
    characters: int
    nll_nats: float

    @property
    def loss(self) -> float:
        return self.nll_nats / self.tokens

    def as_dict(self) -> dict:
        bits = self.nll_nats / math.log(2)
        return {
            "loss": self.loss,
            "perplexity": math.exp(min(self.loss, 700.0)),
            "bits_per_byte": bits / self.bytes,
            "bits_per_char": bits / self.characters,
            "documents": self.documents,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "characters": self.characters,
        }


def windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window; every position in 1..n-1 is scored once."""
    if not 0 < stride <= block_size:
        raise ValueError(f"stride must be in 1..block_size ({block_size}), got {stride}")
    out = []
    context = max(1, block_size - stride)  # tokens of left context carried into the next window
    scored_to = 1  # position 0 (the leading <eot>) has no context and is never scored
    begin = 0
    while scored_to < n_tokens:
        end = min(begin + block_size, n_tokens)
        out.append((begin, end, scored_to))
        scored_to = end
        begin = end - context
    return out


def _window_batches(tokens, wins, batch_size: int, pad_id: int):
    """(input ids, targets, attention mask, target positions) per batch of ``wins``; a target at row
    position t is token t of the window, predicted from the logits at t-1; -100 (position -1) where nothing
    is scored."""
    for i in range(0, len(wins), batch_size):
        batch = wins[i:i + batch_size]
        width = max(e - b for b, e, _ in batch)
        inp = torch.full((len(batch), width), pad_id, dtype=torch.long)
        tgt = torch.full((len(batch), width), -100, dtype=torch.long)
        pos = torch.full((len(batch), width), -1, dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (b, e, s) in enumerate(batch):
            chunk = torch.from_numpy(np.asarray(tokens[b:e], dtype=np.int64))
            inp[r, :e - b] = chunk
            att[r, :e - b] = 1
            tgt[r, s - b:e - b] = chunk[s - b:]
            pos[r, s - b:e - b] = torch.arange(s, e)
        yield inp, tgt, att, pos


def _token_nll(model, tokens, wins, batch_size: int, pad_id: int, device: str, progress: str | None):
    """Per batch of ``wins``, flattened: the NLL of every target (float64, on ``device``; 0 where
    nothing is scored), which targets are scored (a CPU mask) and their positions in ``tokens``. The model runs in eval mode without gradients and is put back in the
    mode it was in: the one scoring loop behind :func:`score_tokens` and :func:`score_tokens_by_group`."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inp, tgt, att, pos in tqdm(_window_batches(tokens, wins, batch_size, pad_id), desc=progress,
                                           total=-(-len(wins) // batch_size), disable=progress is None, leave=False):
                logits = model(input_ids=inp.to(device), attention_mask=att.to(device)).logits.float()
                shift_tgt = tgt[:, 1:].reshape(-1)
                keep = shift_tgt != -100
                nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                        shift_tgt.to(device), ignore_index=-100, reduction="none")
                yield nll.double(), keep, pos[:, 1:].reshape(-1)
    finally:
        model.train(was_training)


def score_tokens(model, tokens: np.ndarray, block_size: int, stride: int, batch_size: int = 8,
                 device: str = "cpu", pad_id: int = 0, progress: str | None = None,
                 part: tuple[int, int] = (0, 1)) -> tuple[float, int]:
    """Total NLL (nats) and number of predicted tokens over a token stream, by :func:`windows`.

    ``tokens`` starts with an end-of-text (never predicted). ``part=(rank, world)`` scores every
    world-th window from the rank-th, so several processes split the work and sum their results:
    training runs its validation this way, eval_model.py with one part. The sum stays on the device."""
    rank, world = part
    wins = windows(len(tokens), block_size, stride)[rank::world]
    nll = torch.zeros((), dtype=torch.float64, device=device)
    predicted = 0
    for token_nll, keep, _ in _token_nll(model, tokens, wins, batch_size, pad_id, device, progress):
        nll += token_nll.sum()  # ignored targets hold 0: no device sync for a mask
        predicted += int(keep.sum())
    if world == 1 and predicted != len(tokens) - 1:
        raise RuntimeError(f"scored {predicted} of {len(tokens) - 1} tokens: a bug in windows()")
    return float(nll), predicted


def score_tokens_by_group(model, tokens: np.ndarray, groups: np.ndarray, n_groups: int, block_size: int,
                          stride: int, batch_size: int = 8, device: str = "cpu", pad_id: int = 0,
                          progress: str | None = None) -> tuple[list[float], list[int]]:
    """:func:`score_tokens` with the NLL and the predicted tokens split by ``groups[t]``, the group of
    each position (e.g. the source of the document a token belongs to): the same windows and context,
    so the groups' figures sum to the stream's."""
    wins = windows(len(tokens), block_size, stride)
    group_of = torch.from_numpy(np.asarray(groups, dtype=np.int64))
    nll = torch.zeros(n_groups, dtype=torch.float64)
    count = torch.zeros(n_groups, dtype=torch.long)
    for token_nll, keep, positions in _token_nll(model, tokens, wins, batch_size, pad_id, device, progress):
        g = group_of[positions[keep]]
        nll.index_add_(0, g, token_nll.cpu()[keep])
        count.index_add_(0, g, torch.ones_like(g))
    if int(count.sum()) != len(tokens) - 1:
        raise RuntimeError(f"scored {int(count.sum())} of {len(tokens) - 1} tokens: a bug in windows()")
    return nll.tolist(), count.tolist()


def encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens. A text longer than the model's context is expected
    here (it is scored over windows): ``verbose=False`` keeps transformers from warning that it
    "will result in indexing errors"."""
    return tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]


def score_texts(model, tokenizer, texts: Sequence[str], block_size: int, stride: int,
                batch_size: int = 8, device: str = "cpu", progress: str | None = None) -> LanguageScore:
    """Score ``texts`` (already normalized) with ``model``; see the module docstring."""
    eot = tokenizer.eos_token_id
    ids: list[int] = [eot]
    for enc in encode(tokenizer, texts):
        ids.extend(enc)
        ids.append(eot)
    tokens = np.asarray(ids, dtype=np.int64)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    nll, predicted = score_tokens(model, tokens, block_size, stride, batch_size, device, pad, progress)
    n_docs = len(texts)
    return LanguageScore(
        documents=n_docs,
        tokens=predicted,
        bytes=sum(len(t.encode("utf-8")) for t in texts) + n_docs,
        characters=sum(len(t) for t in texts) + n_docs,
        nll_nats=nll,
    )


def score_documents(model, tokenizer, texts: Sequence[str], groups: Sequence[int], n_groups: int,
                    block_size: int, stride: int, batch_size: int = 8, device: str = "cpu",
                    max_tokens: int | None = None, progress: str | None = None) -> list[LanguageScore]:
    """Score ``texts`` as one stream, in the order given, and split the figures by ``groups[i]`` (the
    group of text i, e.g. its source): one :class:`LanguageScore` per group, summing to the stream's.

    With ``max_tokens`` only the first that many tokens after the leading end-of-text are scored, as
    training's ``--eval-max-tokens`` does; a document cut short counts its bytes and characters in
    proportion to its tokens scored, and counts as a document."""
    eot = tokenizer.eos_token_id
    encoded = encode(tokenizer, texts)
    lengths = np.asarray([len(e) + 1 for e in encoded], dtype=np.int64)  # each with its end-of-text
    tokens = np.fromiter((t for e in encoded for t in (*e, eot)), dtype=np.int64, count=int(lengths.sum()))
    tokens = np.concatenate([np.asarray([eot], dtype=np.int64), tokens])
    pos_group = np.concatenate([[0], np.repeat(np.asarray(groups, dtype=np.int64), lengths)])
    if max_tokens is not None and len(tokens) - 1 > max_tokens:
        tokens, pos_group = tokens[:max_tokens + 1], pos_group[:max_tokens + 1]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    nll, count = score_tokens_by_group(model, tokens, pos_group, n_groups, block_size, stride, batch_size, device,
                                       pad, progress)
    scores = [LanguageScore(0, 0, 0, 0, 0.0) for _ in range(n_groups)]
    left = len(tokens) - 1
    for text, group, n in zip(texts, groups, lengths.tolist()):
        if left <= 0:
            break
        share = min(n, left) / n
        left -= n
        sc = scores[group]
        sc.documents += 1
        sc.bytes += round((len(text.encode("utf-8")) + 1) * share)
        sc.characters += round((len(text) + 1) * share)
    for sc, g_nll, g_count in zip(scores, nll, count):
        sc.nll_nats, sc.tokens = g_nll, g_count
    return scores


def score_each(model, tokenizer, texts: Sequence[str], batch_size: int = 8, device: str = "cpu",
               max_tokens: int | None = None, progress: str | None = None) -> tuple[list[float], list[int]]:
    """Negative log-likelihood in nats of each text on its own, and the tokens predicted for it.

    Each text is scored as ``<eot> text <eot>``: its tokens and the closing end-of-text are predicted
    from the opening one, so the figure is the cost of the whole sentence as a complete document.
    A text longer than ``max_tokens`` (default: the model's context) is scored over sliding windows
    of that length advancing by half of it, as :func:`score_texts` does.
    """
    limit = max_tokens or context_length(model.config)
    eot = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    encoded = encode(tokenizer, texts)
    seqs = [[eot, *enc, eot] for enc in encoded]
    nll = [0.0] * len(seqs)
    for i, s in enumerate(seqs):
        if len(s) > limit:
            nll[i] = score_texts(model, tokenizer, [texts[i]], limit, max(1, limit // 2), batch_size, device).nll_nats
    # longest first, so that a batch pads little
    order = sorted((i for i in range(len(seqs)) if len(seqs[i]) <= limit), key=lambda i: -len(seqs[i]))
    model.eval()
    with torch.no_grad():
        for b in tqdm(range(0, len(order), batch_size), desc=progress, disable=progress is None, leave=False):
            idx = order[b:b + batch_size]
            width = len(seqs[idx[0]])
            inp = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                inp[r, :len(seqs[i])] = torch.tensor(seqs[i])
                att[r, :len(seqs[i])] = 1
            inp, att = inp.to(device), att.to(device)
            logits = model(input_ids=inp, attention_mask=att).logits.float()
            lp = F.cross_entropy(logits[:, :-1].transpose(1, 2), inp[:, 1:], reduction="none")
            lp = (lp * att[:, 1:]).sum(dim=1)
            for r, i in enumerate(idx):
                nll[i] = float(lp[r])
    return nll, [len(s) - 1 for s in seqs]
