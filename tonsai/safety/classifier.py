"""An optional Hugging Face text classifier as a second toxicity signal (``--classifier``).

Any ``AutoModelForSequenceClassification`` model with its tokenizer, from a local folder or a Hub
id (downloaded to the Hugging Face cache like any ``from_pretrained``; ``HF_HUB_OFFLINE=1`` keeps
it to the cache). Which label means "toxic" differs between models (``toxic``, ``LABEL_1``,
``hate``...): ``--classifier-label`` names it, by name or index, and the score of a text is that
label's probability: softmax over the labels, or a sigmoid for multi-label models
(``problem_type: multi_label_classification``). A text is flagged at score >= the threshold.

No Khmer toxicity classifier is known to the project; multilingual ones (XLM-R based) have seen
Khmer in pretraining but rarely in their toxicity data, so the lexicon remains the Khmer signal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tonsai.errors import StageError

log = logging.getLogger(__name__)


class ToxicityClassifier:
    def __init__(self, name_or_path: str, label: str = "toxic", threshold: float = 0.5, device: str = "cpu",
                 max_length: int = 512):
        local = Path(name_or_path)
        if local.exists() and not (local / "config.json").is_file():
            raise StageError(f"--classifier {name_or_path}: no config.json there; pass a folder saved with "
                             "save_pretrained() or a Hub model id")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).to(device).eval()
        except OSError as e:
            raise StageError(f"--classifier {name_or_path}: cannot load a sequence classifier ({e}). A Hub id "
                             "needs network access once (or the model in the Hugging Face cache)") from e
        self.name, self.threshold, self.device, self.max_length = name_or_path, threshold, device, max_length
        self.label, self.index = label, self._label_index(label)
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        # right padding: models with absolute positions (BERT, XLM-R) read the first token at position 0;
        # a causal LM's tokenizer (tonsai's) may default to left padding for generation
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _label_index(self, label: str) -> int:
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        for i, name in id2label.items():
            if name.lower() == label.lower():
                return i
        if label.isdigit() and int(label) in id2label:
            return int(label)
        raise StageError(f"--classifier-label {label!r} is not a label of {self.name}; its labels are "
                         + ", ".join(f"{i}={n}" for i, n in sorted(id2label.items())))

    def describe(self) -> dict:
        return {"model": self.name, "label": self.model.config.id2label[self.index], "label_index": self.index,
                "threshold": self.threshold, "multi_label": self.multi_label}

    def scores(self, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """The toxic label's probability for each text."""
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                logits = self.model(**enc).logits.float()
                probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
                out += probs[:, self.index].tolist()
        return out
