import math

import pytest
import torch

from tonsai.eval.perplexity import score_each, score_texts, windows

from ..conftest import SAMPLE


@pytest.mark.parametrize("n, block, stride", [(10, 4, 2), (10, 4, 4), (100, 16, 5), (3, 8, 4), (17, 4, 1)])
def test_windows_score_every_position_once_with_context(n, block, stride):
    seen = []
    for b, e, s in windows(n, block, stride):
        assert e - b <= block and b < s <= e
        seen.extend(range(s, e))
    assert seen == list(range(1, n))


def test_score_matches_one_full_forward_pass(sample_pipeline):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_layer=1, n_embd=32, n_head=2)).eval()
    texts = ["ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។", "Hello world."]
    score = score_texts(model, tok, texts, block_size=512, stride=256)
    ids = [tok.eos_token_id]
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = model(input_ids=x, labels=x).loss.item()
    assert score.tokens == len(ids) - 1
    assert score.loss == pytest.approx(ref, rel=1e-5)
    d = score.as_dict()
    assert d["bytes"] == sum(len(t.encode()) for t in texts) + 2
    assert d["bits_per_byte"] == pytest.approx(ref * score.tokens / math.log(2) / d["bytes"], rel=1e-5)
    # short windows give a higher (less context) but finite loss over the same tokens
    short = score_texts(model, tok, texts, block_size=4, stride=2)
    assert short.tokens == score.tokens


def test_scores_the_tokens_training_saw_even_with_a_literal_end_of_text(sample_pipeline, tmp_path):
    """Evaluation tokenizes documents exactly as tokenization for training does: a quoted
    "<|endoftext|>" is text in both, so perplexity is over the same token stream."""
    import numpy as np
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tonsai.tokenizer.pack import TokenFile, pack_texts

    tok = AutoTokenizer.from_pretrained(sample_pipeline / "tok")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=1, n_embd=16, n_head=2)).eval()
    texts = ["End a file with <|endoftext|> please."]
    pack_texts(texts, sample_pipeline / "tok", tmp_path / "t")
    packed = np.asarray(TokenFile(tmp_path / "t").tokens).tolist()
    assert score_texts(model, tok, texts, block_size=64, stride=64).tokens == len(packed)
    assert packed.count(tok.eos_token_id) == 1


def test_score_each_is_the_full_sequence_loss_and_long_texts_use_windows(model_and_tok):
    model, tok = model_and_tok
    texts = ["ទន្លេមេគង្គហូរកាត់ប្រទេសកម្ពុជា។", "The Mekong flows through Cambodia.", "ក"]
    nll, n = score_each(model, tok, texts, batch_size=2)
    for text, got, count in zip(texts, nll, n):
        ids = torch.tensor([[tok.eos_token_id, *tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]])
        with torch.no_grad():
            ref = model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        assert count == ids.shape[1] - 1
        assert got == pytest.approx(ref, rel=1e-4)
    # a text longer than the limit is scored over sliding windows, exactly like score_texts
    long_text = " ".join((SAMPLE / "en.txt").read_text(encoding="utf-8").split()[:150])
    (got,), (count,) = score_each(model, tok, [long_text], max_tokens=64)
    ref = score_texts(model, tok, [long_text], block_size=64, stride=32)
    assert count > 64 and got == pytest.approx(ref.nll_nats, rel=1e-5)


def test_a_text_longer_than_the_context_is_scored_without_the_indexing_errors_warning(trained_model, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(trained_model).eval(), AutoTokenizer.from_pretrained(trained_model)
    long_text = " ".join((SAMPLE / "en.txt").read_text(encoding="utf-8").split()[:1500])
    assert len(tok(long_text, add_special_tokens=False, verbose=False)["input_ids"]) > tok.model_max_length
    caplog.clear()
    score_texts(model, tok, [long_text], block_size=64, stride=32)
    score_each(model, tok, [long_text], max_tokens=64)
    assert not [r for r in caplog.records if "longer than the specified maximum" in r.getMessage()]
    tok(long_text)  # transformers' warning itself, so that the check above can fail
    assert [r for r in caplog.records if "longer than the specified maximum" in r.getMessage()]
