"""Loss masking and packing, token by token, with the tokenizer tonsai trains and the GPT-2 and
Llama models tonsai builds: labels only on assistant text and the <|end|> closing it, and the
logits of every conversation in a packed block equal to its logits alone."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import default_data_collator

from tonsai.model.build import build_model, load_model_config
from tonsai.sft.data import SftSource, load_sft_data
from tonsai.sft.pack import (
    IGNORE,
    PackedConversations,
    PackStats,
    encode,
    encode_all,
    pack,
    packed_by_lang,
    prepare_model_for_packing,
)
from tonsai.sft.template import END_TOKEN, ROLE_TOKENS

from ..conftest import REPO, SAMPLE


@pytest.fixture(scope="module")
def shipped():
    return load_sft_data([SftSource(str(SAMPLE / "conversations.jsonl")),
                          SftSource(str(SAMPLE / "instructions.jsonl"))], validation_fraction=0.1)


def runs(labels: list[int]) -> list[range]:
    """The maximal runs of labelled positions."""
    out, start = [], None
    for i, x in enumerate(labels + [IGNORE]):
        if x != IGNORE and start is None:
            start = i
        elif x == IGNORE and start is not None:
            out.append(range(start, i))
            start = None
    return out


def test_labels_are_the_assistant_turns(chat_tokenizer, shipped):
    tok = chat_tokenizer
    assistant, end = tok.convert_tokens_to_ids([ROLE_TOKENS["assistant"], END_TOKEN])
    conversations = shipped.train + [c for v in shipped.validation.values() for c in v]
    for conv in conversations:
        ids, labels = encode(tok, conv.messages)
        assert ids == tok.apply_chat_template(conv.messages, tokenize=True)["input_ids"]
        assert all(x in (i, IGNORE) for i, x in zip(ids, labels))
        answers = [m["content"] for m in conv.messages if m["role"] == "assistant"]
        spans = runs(labels)
        # one run per assistant turn: its text and the <|end|> that closes it, decoded back
        assert [tok.decode(ids[r.start:r.stop]) for r in spans] == [a + END_TOKEN for a in answers]
        # the same positions found from the markers alone: after each <|assistant|>, up to its <|end|>
        starts = [k + 1 for k, i in enumerate(ids) if i == assistant]
        assert [(r.start, r.stop) for r in spans] == [(s, ids.index(end, s) + 1) for s in starts]
        # everything else (bos, system and user text, markers) is unlabelled, and decodes to the prompts
        rest = tok.decode([i for i, x in zip(ids, labels) if x == IGNORE])
        assert all(m["content"] in rest for m in conv.messages if m["role"] != "assistant")


def test_pack_layout(chat_tokenizer, shipped):
    encoded = encode_all(chat_tokenizer, shipped.train)
    lengths = [len(ids) for ids, _ in encoded]
    block = 192
    stats = PackStats()
    blocks = pack(encoded, block, chat_tokenizer.pad_token_id, stats, [c.lang for c in shipped.train])
    too_long = sum(n > block for n in lengths)
    assert too_long and stats.too_long == too_long and stats.conversations == len(encoded) - too_long
    assert stats.blocks == len(blocks) < stats.conversations  # several conversations share blocks
    assert stats.tokens == sum(n for n in lengths if n <= block)
    assert stats.padding == len(blocks) * block - stats.tokens and stats.fill > 0.8
    seen = []
    for b in blocks:
        assert {k: (v.shape, str(v.dtype)) for k, v in b.items()} == {
            k: ((block,), "int32") for k in ("input_ids", "labels", "position_ids")}
        starts = [i for i in range(block) if b["position_ids"][i] == 0] + [block]
        for s, e in itertools.pairwise(starts):
            assert list(b["position_ids"][s:e]) == list(range(e - s))
            piece = (b["input_ids"][s:e].tolist(), b["labels"][s:e].tolist())
            if piece[0][0] == chat_tokenizer.bos_token_id:
                seen.append(piece)
            else:  # the padding: pad ids, no labels
                assert e == block and set(piece[0]) == {chat_tokenizer.pad_token_id} and set(piece[1]) == {IGNORE}
    # every conversation that fits is in exactly one block, whole
    assert sorted(seen) == sorted((ids, labels) for ids, labels in encoded if len(ids) <= block)
    assert stats.labelled_tokens == sum(sum(x != IGNORE for x in lab) for _, lab in seen)
    fits = [(len(ids), sum(x != IGNORE for x in lab), c.lang) for (ids, lab), c in zip(encoded, shipped.train)
            if len(ids) <= block]
    assert stats.tokens_by_lang == {lang: sum(n for n, _, g in fits if g == lang) for lang in ("km", "en")}
    assert stats.labelled_by_lang == {lang: sum(m for _, m, g in fits if g == lang) for lang in ("km", "en")}


@pytest.mark.parametrize(("config", "attn"), [("gpt2_tiny.json", "sdpa"), ("llama_tiny.json", "sdpa"),
                                             ("llama_tiny.json", "eager")])
def test_packed_logits_equal_alone(chat_tokenizer, shipped, config, attn):
    """Each conversation of a packed batch gets the logits it gets alone (atol 1e-5), and the loss
    of the batch is the mean over all labelled tokens of the conversations' own losses. With a
    key/value cache the packed detection is off and the later conversations' logits change: the
    hazard prepare_model_for_packing() removes."""
    tok = chat_tokenizer
    torch.manual_seed(0)
    model = build_model(load_model_config(REPO / "configs/model" / config, tok)).eval()
    model.set_attn_implementation(attn)
    prepare_model_for_packing(model)
    encoded = encode_all(tok, shipped.train[:16])
    blocks = [b for b in pack(encoded, 256, tok.pad_token_id) if (b["position_ids"] == 0).sum() >= 3][:2]
    assert len(blocks) == 2  # blocks with at least two conversations (and padding, or three conversations)
    batch = default_data_collator([PackedConversations(blocks)[i] for i in range(2)])
    assert set(batch) == {"input_ids", "labels", "position_ids"} and batch["input_ids"].dtype == torch.long
    with torch.no_grad():
        out = model(**batch)
        leaky = model(**batch, use_cache=True).logits
    total, count, leak = 0.0, 0, 0.0
    for row in range(2):
        pos = batch["position_ids"][row].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for s, e in itertools.pairwise(starts):
            ids, labels = batch["input_ids"][row, s:e], batch["labels"][row, s:e]
            if (labels == IGNORE).all():
                continue  # padding
            with torch.no_grad():
                alone = model(input_ids=ids[None]).logits[0]
            torch.testing.assert_close(out.logits[row, s:e], alone, rtol=0, atol=1e-5)
            leak = max(leak, (leaky[row, s:e] - alone).abs().max().item())
            ce = torch.nn.functional.cross_entropy(alone[:-1], labels[1:], ignore_index=IGNORE, reduction="sum")
            total, count = total + ce.item(), count + int((labels[1:] != IGNORE).sum())
    assert leak > 1e-2
    assert out.loss.item() == pytest.approx(total / count, abs=1e-5)


def test_packed_by_lang(chat_tokenizer, shipped):
    stats: dict[str, PackStats] = {}
    by_lang = packed_by_lang(chat_tokenizer, shipped.validation, 512, stats=stats)
    assert set(by_lang) == set(shipped.validation) == {"km", "en"}
    for lang, blocks in by_lang.items():
        expected = sorted(encode(chat_tokenizer, c.messages)[0] for c in shipped.validation[lang])
        got = []
        for b in blocks:
            pos = b["position_ids"].tolist() + [0]
            starts = [i for i, p in enumerate(pos) if p == 0]
            got += [b["input_ids"][s:e].tolist() for s, e in itertools.pairwise(starts)
                    if b["input_ids"][s] == chat_tokenizer.bos_token_id]
        assert sorted(got) == expected and stats[lang].conversations == len(expected)


def test_encode_needs_a_template_that_marks_the_answers(sample_pipeline):
    from transformers import AutoTokenizer

    from tonsai.errors import StageError

    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")  # no chat template
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    with pytest.raises(StageError, match="install_chat_template"):
        encode(tok, messages)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # renders, but marks nothing
    with pytest.raises(StageError, match=r"\{% generation %\}"):
        encode(tok, messages)
