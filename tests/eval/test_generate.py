import pytest
import torch


@pytest.fixture(scope="module")
def lm(trained_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained_model)
    model = AutoModelForCausalLM.from_pretrained(trained_model).eval()
    return model, tok


PROMPTS = ["ប្រទេសកម្ពុជា", "The Mekong river", "ស្រូវ", "Angkor Wat is a temple in the north of"]


def test_batched_generation_equals_one_prompt_at_a_time(lm):
    from tonsai.eval.generate import generate_greedy

    model, tok = lm
    side = tok.padding_side
    batched = generate_greedy(model, tok, PROMPTS, max_new_tokens=12, stop=["\n"], batch_size=4)
    alone = [generate_greedy(model, tok, [p], max_new_tokens=12, stop=["\n"], batch_size=1)[0] for p in PROMPTS]
    assert batched == alone
    assert tok.padding_side == side  # generation pads on the left itself, without touching the caller's tokenizer


def test_generation_matches_a_manual_greedy_loop_and_stops(lm):
    from tonsai.eval.generate import cut_at_stop, generate_greedy

    model, tok = lm
    prompt = PROMPTS[1]
    ids = [tok.eos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(10):
            nxt = model(input_ids=x).logits[0, -1].argmax()
            x = torch.cat([x, nxt.view(1, 1)], dim=1)
    manual = tok.decode(x[0, len(ids):].tolist(), skip_special_tokens=True)
    out = generate_greedy(model, tok, [prompt], max_new_tokens=10, stop=[])[0]
    assert out == cut_at_stop(manual.split(tok.eos_token)[0], [])
    # a stop string taken from the text cuts the output before it
    assert out.strip(), "the trained model generated nothing to take a stop string from"
    stop = out.strip()[-1]
    cut = generate_greedy(model, tok, [prompt], max_new_tokens=10, stop=[stop])[0]
    assert cut == out[:out.index(stop)]
    assert cut_at_stop("abc\ndef", ["\n", "c"]) == "ab"


def test_stop_on_strings_marks_each_row_once_its_new_text_has_a_stop(lm):
    from tonsai.eval.generate import StopOnStrings

    _, tok = lm
    prompt = tok("ស្រូវ", add_special_tokens=False)["input_ids"]
    done_a = tok(" river.\nNext", add_special_tokens=False)["input_ids"]
    open_b = tok(" river and", add_special_tokens=False)["input_ids"]
    width = max(len(done_a), len(open_b))
    pad = tok.eos_token_id  # skipped when decoding
    rows = [prompt + done_a + [pad] * (width - len(done_a)), prompt + open_b + [pad] * (width - len(open_b))]
    crit = StopOnStrings(tok, ["\n"], prompt_width=len(prompt))
    assert crit(torch.tensor(rows), None).tolist() == [True, False]
    # only the generated part counts: a stop string inside the prompt does not end the row
    nl_prompt = tok("a\nb", add_special_tokens=False)["input_ids"]
    crit = StopOnStrings(tok, ["\n"], prompt_width=len(nl_prompt))
    assert crit(torch.tensor([nl_prompt + open_b]), None).tolist() == [False]
    assert StopOnStrings(tok, [""], prompt_width=0)(torch.tensor(rows), None).tolist() == [False, False]


def test_long_prompt_is_left_truncated_to_fit(lm):
    """A prompt longer than the context keeps its last (context - max_new_tokens) tokens: the output is
    a manual greedy loop's over exactly those, and the short prompt batched beside it is unchanged."""
    from tonsai.eval.generate import context_length, generate_greedy

    model, tok = lm
    long = "ស្រូវ " * 400  # far longer than the 256-token context
    ids = [tok.eos_token_id] + tok(long, add_special_tokens=False)["input_ids"]
    room = context_length(model) - 4
    assert len(ids) > room
    x = torch.tensor([ids[-room:]])
    with torch.no_grad():
        for _ in range(4):
            x = torch.cat([x, model(input_ids=x).logits[0, -1].argmax().view(1, 1)], dim=1)
    new = x[0, room:].tolist()
    manual = tok.decode(new[:new.index(tok.eos_token_id)] if tok.eos_token_id in new else new,
                        skip_special_tokens=True)
    out = generate_greedy(model, tok, [long, "ស្រូវ"], max_new_tokens=4, stop=[], batch_size=2)
    assert out == [manual, generate_greedy(model, tok, ["ស្រូវ"], max_new_tokens=4, stop=[])[0]]


def test_loglikelihood_equals_a_full_forward_pass_and_batches(lm):
    from tonsai.eval.generate import loglikelihood

    model, tok = lm
    pairs = [("The Mekong", " river"), ("ប្រទេស", "កម្ពុជា"), ("The Mekong", " is long and wide"), ("", "ស្រូវ")]
    batched = loglikelihood(model, tok, pairs, batch_size=4)
    alone = [loglikelihood(model, tok, [p], batch_size=1)[0] for p in pairs]
    for (a, ga), (b, gb) in zip(batched, alone):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    ctx, cont = pairs[2]
    c = tok(ctx, add_special_tokens=False)["input_ids"]
    whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tok.eos_token_id] + whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    n = len(whole) - len(c)
    target = ids[0, -n:]
    expected = logp[-n:].gather(-1, target[:, None]).sum().item()
    assert batched[2][0] == pytest.approx(expected, abs=1e-4)
    assert batched[2][0] < batched[0][0] < 0  # a longer continuation is less likely


def test_chat_prompts_go_in_as_the_templates_ids(trained_model):
    """eval_model.py --chat: each prompt is a user turn of the chat template, given as ids (its role markers
    stay single special tokens), a reply is what greedy decoding gives up to <|end|>, end-of-text or the
    task's stop string, and a choice is scored right after the assistant marker."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.eval.suites import Request, _generate, _loglikelihoods
    from tonsai.sft.template import END_TOKEN, chat_prompt_ids, install_chat_template, resize_for_new_tokens

    tok = AutoTokenizer.from_pretrained(trained_model)
    model = AutoModelForCausalLM.from_pretrained(trained_model).eval()
    resize_for_new_tokens(model, tok, install_chat_template(tok))
    end = tok.convert_tokens_to_ids(END_TOKEN)
    ids = chat_prompt_ids(tok, "ភ្នំពេញ")
    assert ids == tok.apply_chat_template([{"role": "user", "content": "ភ្នំពេញ"}], add_generation_prompt=True,
                                          return_dict=True)["input_ids"]
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>") and tok.convert_tokens_to_ids("<|user|>") in ids
    with torch.no_grad():
        full = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                              pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    ends = [full.index(t) for t in (end, tok.eos_token_id) if t in full]
    want = tok.decode(full[:min(ends)] if ends else full, skip_special_tokens=True).split("\n")[0]
    got = _generate(model, tok, ["ភ្នំពេញ"], 12, ("\n",), 1, "cpu", None, chat=True)
    assert got == [want]
    (ll_a, _), (ll_b, _) = _loglikelihoods(model, tok, [Request("ភ្នំពេញ", choices=["a", "b"], answer=0)], " ",
                                           2, "cpu", None, chat=True)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
    a, b = (tok("a", add_special_tokens=False)["input_ids"], tok("b", add_special_tokens=False)["input_ids"])
    assert len(a) == len(b) == 1  # single-token choices: their scores are the log-probabilities after the marker
    assert ll_a == pytest.approx(logp[a[0]].item(), abs=1e-4) and ll_b == pytest.approx(logp[b[0]].item(), abs=1e-4)
