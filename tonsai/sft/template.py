"""The chat format of tonsai's instruction-tuned models, installed into a tokenizer.

A conversation renders as::

    <|endoftext|><|system|>SYSTEM<|end|><|user|>QUESTION<|end|><|assistant|>ANSWER<|end|>...

The role markers and ``<|end|>`` are special tokens: each is one id, and text on either side of
one is tokenized on its own, so the ids of a prompt rendered with ``add_generation_prompt=True``
(ending in ``<|assistant|>``) are exactly the prefix of the ids the model was trained on. No
newlines surround the markers: they would cost a token per turn and carry nothing the markers do
not. The conversation starts with the tokenizer's bos token (``<|endoftext|>`` for tonsai's
tokenizers), the token every pretraining document follows. The assistant's text and the
``<|end|>`` that closes it sit inside ``{% generation %}`` so that transformers'
``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly the tokens the model
must learn to produce (:func:`tonsai.sft.pack.encode`). Generation stops at ``<|end|>``: pass
:func:`stop_token_ids` as ``eos_token_id`` to ``generate()``.

The template is a Jinja string in Hugging Face's ``chat_template`` syntax, written by tonsai
rather than taken from a model family (ChatML, Llama 3) because those carry their own special
tokens and newlines, which a small tonsai vocabulary would spend several tokens on per turn.
"""

from __future__ import annotations

import logging

from tonsai.errors import StageError
from tonsai.model.build import VOCAB_MULTIPLE

# torch (1.7 s to import on a 2-core machine) is imported inside resize_for_new_tokens only: eval_model.py
# imports this module at start (through tonsai.eval.suites), and its --help must not pay it.

log = logging.getLogger(__name__)

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TOKEN = "<|end|>"
MARKERS = [*ROLE_TOKENS.values(), END_TOKEN]
ROLES = tuple(ROLE_TOKENS)

CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in " + repr(list(ROLES)) + " %}"
    "{{ raise_exception('tonsai chat template: unknown role ' ~ message['role'] ~ '; use system, user or assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    + ROLE_TOKENS["assistant"] + "{% generation %}{{ message['content'] }}" + END_TOKEN + "{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}" + END_TOKEN +
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ROLE_TOKENS["assistant"] + "{% endif %}"
)


def install_chat_template(tokenizer) -> list[str]:
    """Add the markers that ``tokenizer`` lacks as special tokens and set its chat template.

    Returns the markers that got new ids (empty when the template was already installed), to pass
    to :func:`resize_for_new_tokens`. A marker already in the vocabulary keeps its id (and its
    trained embedding row) and is only made special. A different chat template already set on the
    tokenizer is replaced, with a warning."""
    special = set(tokenizer.all_special_tokens)
    missing = [t for t in MARKERS if t not in special]
    before = len(tokenizer)
    known = {t for t in missing if t in tokenizer.get_vocab()}
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    added = [t for t in missing if t not in known]
    if len(tokenizer) != before + len(added):  # cannot happen with a consistent tokenizer: say so if it does
        raise RuntimeError(f"adding {added} grew the vocabulary from {before} to {len(tokenizer)}")
    current = getattr(tokenizer, "chat_template", None)
    if current and current != CHAT_TEMPLATE:
        log.warning("replacing the tokenizer's own chat template with tonsai's (%s ... %s)", ROLE_TOKENS["user"],
                    END_TOKEN)
    tokenizer.chat_template = CHAT_TEMPLATE
    return added


def stop_token_ids(tokenizer) -> list[int]:
    """The ids that end an assistant turn in generation: ``<|end|>`` (when the tokenizer has it), then eos."""
    ids = [tokenizer.convert_tokens_to_ids(END_TOKEN)] if END_TOKEN in tokenizer.get_vocab() else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def chat_prompt_ids(tokenizer, prompt: str, where: str = "the model's tokenizer") -> list[int]:
    """``prompt`` as the user turn of a one-message conversation in the tokenizer's chat template, as the
    token ids that end where the assistant's reply starts. Ids, not text: the role markers are special
    tokens that plain text must not produce. ``where`` names the tokenizer in the error when it has no
    template (a base model: leave out --chat)."""
    if not getattr(tokenizer, "chat_template", None):
        raise StageError(f"--chat: {where} has no chat template (tokenizer_config.json 'chat_template'); leave "
                         f"out --chat for a base model, or give a model tuned with scripts/train_sft.py")
    out = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                        add_generation_prompt=True, return_dict=True)
    return list(out["input_ids"])


def resize_for_new_tokens(model, tokenizer, added: list[str]) -> None:
    """Give the ``added`` tokens embedding rows: grow the input embeddings (and an untied output
    head) when ``len(tokenizer)`` exceeds them, to a multiple of 64 as :mod:`tonsai.model.build`
    sizes vocabularies, and set the rows of the added ids to the mean of the rows of the
    tokenizer's other tokens (in the input embeddings, the output head and its bias if any).

    Why the mean (Hewitt, "Initializing new word embeddings for pretrained language models",
    2021): with a tied or untied head, a new row at the mean of the old ones gives the new token
    the average logit, so the model's next-token distribution over the existing vocabulary barely
    moves before training, while a randomly initialized row can take a large logit and swamp it.
    transformers' ``resize_token_embeddings(mean_resizing=True)`` samples new rows from a normal
    distribution around the mean of *all* old rows, which in a tonsai model include the padding
    rows up to the multiple of 64 (never produced by the tokenizer, so untrained); and when the
    new tokens fit into those padding rows it does not resize, leaving them untrained. So tonsai
    sets the rows itself, from the tokenizer's own tokens only. Rows of the other tokens are not
    changed."""
    import torch

    if not added:
        return
    new_ids = tokenizer.convert_tokens_to_ids(list(added))
    new_set = set(new_ids)
    old_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in new_set])
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=VOCAB_MULTIPLE, mean_resizing=False)
    index = torch.tensor(new_ids)
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    with torch.no_grad():
        targets = [inp] + ([out.weight] if out is not None and out.weight is not inp else [])
        for w in targets:
            w[index] = w[old_ids].float().mean(0).to(w.dtype)
        bias = getattr(out, "bias", None) if out is not None else None
        if bias is not None:
            bias[index] = bias[old_ids].float().mean().to(bias.dtype)
