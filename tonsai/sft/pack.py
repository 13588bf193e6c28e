"""Encoding conversations with the loss on assistant tokens only, and packing several into a block.

:func:`encode` gives the ids ``tokenizer.apply_chat_template(messages)`` gives (what users' chat
calls produce) and labels equal to the ids on the tokens inside the template's
``{% generation %}`` blocks (the assistant's text and the ``<|end|>`` that closes it, see
:mod:`tonsai.sft.template`) and -100 everywhere else (bos, system and user text, role markers).

:func:`pack` puts several encoded conversations into blocks of ``block_size`` tokens (best fit:
each conversation goes into the fullest open block it fits in, so the blocks fill up without
reordering the data more than needed), pads each block, and emits ``input_ids``, ``labels`` and
``position_ids`` that restart at 0 for every conversation (and for the padding), and no
``attention_mask``. That is what makes packing exact in transformers 5 for GPT-2 and Llama with
``sdpa`` (what :func:`tonsai.model.build.build_model` sets) and ``eager`` attention: when
``attention_mask`` is None and there is no key/value cache, ``masking_utils`` finds the packed
sequences from the position ids (a new sequence wherever the position does not grow by one) and
builds a block-diagonal causal mask, so no token attends to another conversation; GPT-2's learned
and Llama's rotary position embeddings see the same positions as for the conversation alone.
``DataCollatorWithFlattening`` relies on the same position ids, and ``flash_attention_2`` reads
packed sequences from them too (not tested here: it needs a GPU and the flash-attn package).
Labels need no care at the seams: the model shifts them by one, and the first token of every
conversation (bos) is never labelled, so no token is trained to predict the next conversation's
first token.

**The forward pass must run without a cache** (``use_cache=False``): with a cache (the config's
default ``use_cache=True`` for a plain ``model(**batch)`` call) transformers skips the packed
detection and every token attends to the whole block. The Trainer sets ``model.config.use_cache``
from ``TrainingArguments.use_cache``, False by default; :func:`prepare_model_for_packing` sets it
for other loops. tests/sft/test_pack.py checks, token by token, that the logits of every
conversation in a packed block equal its logits alone, and that they do not with a cache.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Iterable

import numpy as np
import torch

from tonsai.errors import StageError

IGNORE = -100  # the label transformers' loss ignores
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def encode(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation; see the module docstring."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if not GENERATION_TAG.search(template if isinstance(template, str) else ""):
        raise StageError("the tokenizer's chat template does not mark the assistant's turns with "
                         "{% generation %}; install tonsai's with tonsai.sft.template.install_chat_template")
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(out["input_ids"])
    labels = [i if m else IGNORE for i, m in zip(ids, out["assistant_masks"])]
    return ids, labels


def encode_all(tokenizer, conversations: Iterable) -> list[tuple[list[int], list[int]]]:
    """:func:`encode` of each :class:`tonsai.sft.data.Conversation` (or list of messages)."""
    return [encode(tokenizer, getattr(c, "messages", c)) for c in conversations]


@dataclasses.dataclass
class PackStats:
    """What :func:`pack` did, for the stage's report."""

    conversations: int = 0  # packed
    too_long: int = 0  # dropped: longer than block_size (a cut conversation would teach unfinished answers)
    blocks: int = 0
    tokens: int = 0  # real tokens in the blocks
    labelled_tokens: int = 0
    padding: int = 0
    tokens_by_lang: dict[str, int] = dataclasses.field(default_factory=dict)  # when pack() is given langs
    labelled_by_lang: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def fill(self) -> float:
        """Share of block positions holding real tokens."""
        return self.tokens / max(1, self.tokens + self.padding)


def pack(encoded: list[tuple[list[int], list[int]]], block_size: int, pad_id: int,
         stats: PackStats | None = None, langs: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Blocks of ``block_size`` tokens, each holding whole conversations then padding: dicts of
    int32 arrays ``input_ids``, ``labels`` (-100 on padding) and ``position_ids``. Conversations
    longer than ``block_size`` are dropped and counted in ``stats.too_long``. With ``langs`` (one
    per conversation, e.g. ``[c.lang for c in data.train]``), ``stats`` also counts the packed
    tokens and labelled tokens per language."""
    if block_size < 2:
        raise StageError(f"block size {block_size} is too small to hold a conversation")
    stats = stats if stats is not None else PackStats()
    contents: list[list[int]] = []  # conversation indices per block
    room: list[tuple[int, int]] = []  # (free positions, block) of the open blocks, sorted
    for k, (ids, labels) in enumerate(encoded):
        if len(ids) != len(labels):
            raise ValueError(f"conversation {k}: {len(ids)} ids but {len(labels)} labels")
        if len(ids) > block_size:
            stats.too_long += 1
            continue
        if labels and labels[0] != IGNORE:
            raise ValueError(f"conversation {k}: its first token is labelled, so the block's previous conversation "
                             f"would be trained to predict it")
        j = bisect.bisect_left(room, (len(ids), -1))  # the fullest open block with room
        if j < len(room):
            free, b = room.pop(j)
        else:
            free, b = block_size, len(contents)
            contents.append([])
        contents[b].append(k)
        if free - len(ids) > 0:
            bisect.insort(room, (free - len(ids), b))
    blocks = [_block([encoded[k] for k in ks], block_size, pad_id) for ks in contents]
    stats.blocks += len(blocks)
    stats.padding += len(blocks) * block_size
    for k in (k for ks in contents for k in ks):
        n, labelled = len(encoded[k][0]), sum(x != IGNORE for x in encoded[k][1])
        stats.conversations += 1
        stats.tokens += n
        stats.padding -= n
        stats.labelled_tokens += labelled
        if langs is not None:
            stats.tokens_by_lang[langs[k]] = stats.tokens_by_lang.get(langs[k], 0) + n
            stats.labelled_by_lang[langs[k]] = stats.labelled_by_lang.get(langs[k], 0) + labelled
    return blocks


def _block(convs: list[tuple[list[int], list[int]]], block_size: int, pad_id: int) -> dict[str, np.ndarray]:
    ids = np.full(block_size, pad_id, dtype=np.int32)
    labels = np.full(block_size, IGNORE, dtype=np.int32)
    pos = np.zeros(block_size, dtype=np.int32)
    at = 0
    for cids, clabels in convs:
        n = len(cids)
        ids[at:at + n], labels[at:at + n], pos[at:at + n] = cids, clabels, np.arange(n)
        at += n
    pos[at:] = np.arange(block_size - at)  # the padding is a sequence of its own
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def packed_by_lang(tokenizer, by_lang: dict[str, list], block_size: int, pad_id: int | None = None,
                   stats: dict[str, PackStats] | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Blocks per language, each packed only from that language's conversations (e.g.
    :attr:`tonsai.sft.data.SftData.validation`), for a validation loss per language. ``stats``,
    when given, receives a :class:`PackStats` per language."""
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    if pad is None:
        raise StageError("the tokenizer has no pad token; pass pad_id")
    out = {}
    for lang, convs in by_lang.items():
        st = PackStats()
        out[lang] = pack(encode_all(tokenizer, convs), block_size, pad, st, [lang] * len(convs))
        if stats is not None:
            stats[lang] = st
    return out


def prepare_model_for_packing(model) -> None:
    """Make ``model(**block)`` exact on packed blocks: no key/value cache (see the module docstring)."""
    model.config.use_cache = False


class PackedConversations(torch.utils.data.Dataset):
    """A torch ``Dataset`` over packed blocks: each item is a dict of int64 tensors ``input_ids``,
    ``labels`` and ``position_ids`` of length ``block_size``, which transformers'
    ``default_data_collator`` stacks into a batch the model takes as is."""

    def __init__(self, blocks: list[dict[str, np.ndarray]]):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v.astype(np.int64)) for k, v in self.blocks[i].items()}
