"""Model cards: the README.md (YAML metadata + text) of a model or tokenizer folder pushed to the Hub.

A card is assembled from what the stages already recorded, so it says what the model really saw:
the dataset manifest (sources, documents, characters per language, the mix asked for and the one
realized), the tokenizer's manifest and fertility.json, the run manifest (training settings, steps,
tokens, last validation) and, if given, an eval_model.py report.json. An instruction-tuned model
(train_sft.py's ``final/``) gets its own card: the SFT run's manifest (method, conversations,
settings, last validation) and its base model's manifests for the pretraining data and the
tokenizer. A manifest that is missing
(a dataset folder left on another machine) becomes a line saying so, not an error. The text is
parsed back with huggingface_hub's ``ModelCard``, whose ``ModelCardData`` checks the metadata.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tonsai.errors import StageError
from tonsai.eval.report import load_report
from tonsai.manifest import MANIFEST_NAME, file_sha256
from tonsai.tokenizer.fertility import render_markdown

# huggingface_hub's ModelCard is imported inside _card_text only: with tonsai.publish.push's Hub imports it
# adds 0.17 s to push_to_hub.py --help on a 2-core machine.

LANG_NAMES = {"km": "Khmer", "en": "English"}
LICENSE_RE = re.compile(r"[a-z0-9][a-z0-9.\-]*")

INTENDED_USE = """\
## Intended use

A base language model for Khmer and English: continuing text, scoring text (perplexity, bits per
byte), and as a starting point for fine-tuning (instruction tuning, classification, translation)
and for research on Khmer language modelling and tokenization. It is not a chat or instruction
model and is not meant to give facts, advice or decisions to end users without further training
and evaluation."""

KHMER_SPECIFICS = """\
- **Khmer specifics.** Khmer writes no spaces between words, and keyboards and fonts often let a
  syllable's consonant, subscript (COENG) and vowel signs be typed in a non-canonical order. The
  tokenizer normalizes its input (tonsai's rules built into `tokenizer.json`: NFC, invisible
  characters such as ZERO WIDTH SPACE dropped, deprecated Khmer letters replaced, part of the
  syllable reordering), so decoding returns that normalized form, not the input bytes; for exactly
  the text the model was trained on, normalize with `tonsai.text.normalize` first. Word counts, and
  metrics based on words, depend on a Khmer word segmenter (khmer-nltk here)."""

LIMITATIONS = f"""\
## Limitations

- **Base model, not instruction-tuned.** It continues text; it does not follow instructions, refuse
  harmful requests, or know when it is wrong. Expect fluent but false statements.
- **Small model, little data.** Its knowledge and fluency are bounded by its size and by the tokens
  listed above; Khmer text on the web is scarce, so Khmer is usually the weaker language. Check the
  evaluation table before relying on it for either language.
{KHMER_SPECIFICS}
- **Bias and content.** The model reproduces the topics, viewpoints and errors of the sources listed
  above; nothing was filtered for toxicity or personal data beyond tonsai's quality filters.
- **Context.** It reads at most the context length above; longer inputs must be cut."""


INTENDED_USE_SFT = """\
## Intended use

A small instruction-tuned model for Khmer and English: answering questions and following short
instructions in its chat format, research on Khmer instruction tuning and chat models, and as a
starting point for further tuning. It is not meant to give facts, advice or decisions to end users
without further training and evaluation."""

LIMITATIONS_SFT = f"""\
## Limitations

- **Supervised fine-tuning only.** It was tuned on the conversations listed above, with no preference
  or safety tuning: it may ignore instructions, does not reliably refuse harmful requests, and does
  not know when it is wrong. Expect fluent but false statements.
- **Small model, little data.** Its knowledge and fluency are bounded by its size and by the base
  model's training tokens; Khmer text on the web is scarce, so Khmer is usually the weaker language.
  Check the evaluation table before relying on it for either language.
{KHMER_SPECIFICS}
- **Bias and content.** The model reproduces the topics, viewpoints and errors of its pretraining
  sources and of the tuning conversations; nothing was filtered for toxicity or personal data beyond
  tonsai's quality filters.
- **Context.** It reads at most the context length above, prompt and answer together; longer
  conversations must be cut."""


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON, or bytes that are not UTF-8
        return None
    return data if isinstance(data, dict) else None


def _manifest(folder: str | Path | None, stage: str) -> dict | None:
    if not folder:
        return None
    m = _read_json(Path(folder) / MANIFEST_NAME)
    return m if m and m.get("stage") == stage else None


def _table(head: list[str], rows: list[list]) -> list[str]:
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    return ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|",
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in rows], ""]


def _plain(v) -> str:
    """A setting as the user wrote it (6e-4, not 0.0006)."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def _lang(code: str) -> str:
    return f"{LANG_NAMES.get(code, code)} (`{code}`)"


def _source_label(source: dict) -> str:
    """A Hub dataset by its name; a local file by its name only (its path is the user's business)."""
    path = str(source.get("path", source.get("name", "?")))
    if path.startswith("hf:"):
        return f"`{path}`"
    return f"`{Path(path).name}`"


def hub_datasets(data_manifest: dict | None) -> list[str]:
    """Hub dataset ids among the dataset's ``hf:`` sources (local folders read through ``hf:`` excluded)."""
    found = []
    for s in (data_manifest or {}).get("sources", []):
        path = str(s.get("path", ""))
        if path.startswith("hf:"):
            name = path[3:].split(":")[0].rstrip("/")
            if name.count("/") == 1 and not Path(name).exists() and name not in found:
                found.append(name)
    return found


def data_section(data_manifest: dict | None, where: str | None, title: str = "Training data") -> list[str]:
    lines = [f"## {title}", ""]
    if data_manifest is None:
        return lines + [f"The dataset manifest ({where or 'unknown folder'}) was not available when this card "
                        "was written.", ""]
    counts = data_manifest.get("counts", {})
    rows = []
    for s in data_manifest.get("sources", []):
        c = counts.get(s.get("name"), {})
        rows.append([_source_label(s), _lang(s.get("lang", "?")), c.get("kept", "-"), c.get("train_selected", "-"),
                     c.get("validation", "-")])
    lines += ["Prepared with tonsai (Unicode and Khmer normalization, language routing, quality filters, exact "
              "and near-duplicate removal, a held-out validation split, then mixing).", ""]
    lines += ["Sources (documents kept after filtering and deduplication, used for training, held out "
              "for validation):", ""]
    lines += _table(["source", "language", "kept", "train", "validation"], rows)
    mix = data_manifest.get("mixture", {})
    if mix:
        lines += ["Training mix, in characters of normalized text (a Khmer character is 3 UTF-8 bytes):", ""]
        lines += _table(["language", "characters", "documents", "share asked", "share realized", "epochs"],
                        [[_lang(lang), m.get("selected_chars", "-"), m.get("selected_docs", "-"),
                          m.get("requested_share", "-"), m.get("realized_share", "-"), m.get("epochs", "-")]
                         for lang, m in mix.items()])
    return lines


def tokenizer_section(tok_manifest: dict | None, fertility_report: dict | None, where: str | None) -> list[str]:
    lines = ["## Tokenizer", ""]
    if tok_manifest is None:
        lines += [f"The tokenizer manifest ({where or 'unknown folder'}) was not available when this card was "
                  "written.", ""]
    else:
        trained = tok_manifest.get("trained_on", {})
        lines += [f"A {tok_manifest.get('algorithm', 'BPE')} BPE of {tok_manifest.get('vocab_size', 0):,} tokens "
                  f"trained with tonsai on {trained.get('documents', 0):,} documents "
                  f"({trained.get('characters', 0):,} characters); `<|endoftext|>` separates documents (bos and "
                  "eos), `<|pad|>` pads (on the left, for generation). It loads with transformers 4.x and 5.x.", ""]
    if fertility_report:
        body = render_markdown(fertility_report).splitlines()[1:]  # its own title dropped
        lines += [re.sub(r"^## ", "### ", line) for line in body] + [""]
    return lines


def _shape_rows(model_config: dict, parameters) -> list[list]:
    shape = [("architecture", model_config.get("model_type", "?")), ("parameters", parameters or "-")]
    for key, label in (("n_layer", "layers"), ("num_hidden_layers", "layers"), ("n_embd", "hidden size"),
                       ("hidden_size", "hidden size"), ("n_head", "attention heads"),
                       ("num_attention_heads", "attention heads"), ("n_positions", "context (tokens)"),
                       ("max_position_embeddings", "context (tokens)"), ("vocab_size", "embedding rows")):
        if key in model_config:
            shape.append((label, model_config[key]))
    return [[k, v] for k, v in shape]


def _validation_rows(final_validation: dict) -> list[list]:
    rows = []
    for key, value in sorted((final_validation or {}).items()):
        m = re.fullmatch(r"eval_(\w+)_loss", key)
        if m:
            rows.append([f"final validation loss, {_lang(m.group(1))}", value])
    return rows


def training_section(model_config: dict, model_manifest: dict | None, run_manifest: dict | None) -> list[str]:
    lines = ["## Training", ""]
    cfg = (model_manifest or {}).get("config", {})
    rows = _shape_rows(model_config, (model_manifest or {}).get("parameters"))
    if cfg:
        rows += [["training block (tokens)", (model_manifest or {}).get("block_size", cfg.get("block_size"))],
                 ["start", (model_manifest or {}).get("start", "-")]]
        budget = (run_manifest or {}).get("budget") or {}
        cfg = {**cfg, "gradient_accumulation": cfg.get("gradient_accumulation") or budget.get("gradient_accumulation", "-")}
        rows += [[label, _plain(cfg.get(key, "-"))] for key, label in (
            ("learning_rate", "peak learning rate"), ("lr_schedule", "schedule"), ("warmup", "warmup"),
            ("weight_decay", "weight decay"), ("optimizer", "optimizer"), ("max_grad_norm", "gradient clipping"),
            ("micro_batch_size", "micro-batch (sequences per device)"),
            ("gradient_accumulation", "gradient accumulation"), ("seed", "seed"))]
        rows.append(["DeepSpeed config", Path(cfg["deepspeed"]).name if cfg.get("deepspeed") else "none"])
    if run_manifest:
        steps, per_step = run_manifest.get("global_step"), run_manifest.get("tokens_per_step")
        rows += [["optimizer steps", steps], ["tokens per step", per_step],
                 ["tokens seen", steps * per_step if isinstance(steps, int) and isinstance(per_step, int) else "-"],
                 ["processes", run_manifest.get("world_size", "-")], ["precision", run_manifest.get("precision", "-")],
                 ["mean training loss (whole run)", run_manifest.get("train_loss", "-")]]
        rows += _validation_rows(run_manifest.get("final_validation", {}))
    else:
        rows.append(["run manifest", "not found beside the model folder"])
    return lines + _table(["setting", "value"], rows)


def eval_section(report: dict | None) -> list[str]:
    if report is None:
        return ["## Evaluation", "", "No evaluation report was given (scripts/push_to_hub.py --eval-dir).", ""]
    lines = ["## Evaluation", "",
             f"scripts/eval_model.py, windows of {report.get('block_size', '?')} tokens with stride "
             f"{report.get('stride', '?')}. Bits per byte and per character do not depend on the tokenizer; loss and "
             "perplexity are per token of this model's tokenizer.", ""]
    langs = report.get("languages", {})
    if langs:
        lines += _table(["language", "loss", "perplexity", "bits/byte", "bits/char", "tokens", "documents"],
                        [[_lang(lang), v.get("loss", "-"), v.get("perplexity", "-"), v.get("bits_per_byte", "-"),
                          v.get("bits_per_char", "-"), v.get("tokens", "-"), v.get("documents", "-")]
                         for lang, v in langs.items()])
    par = report.get("parallel")
    if par:
        lines += [f"Aligned Khmer-English sentences ({par.get('pairs', 0):,} pairs): Khmer "
                  f"{par.get('km_bits_per_sentence', 0):.1f} bits per sentence, English "
                  f"{par.get('en_bits_per_sentence', 0):.1f}, ratio km/en {par.get('km_en_bits_ratio', 0):.3f}.", ""]
    rows = [[suite, task, metric, value, scores.get("n", "-")]
            for suite, tasks in report.get("suites", {}).items() for task, scores in tasks.items()
            for metric, value in scores.items() if metric != "n"]
    if rows:
        if report.get("suite_limit"):
            lines += [f"At most {report['suite_limit']} examples per task (`--limit`): a quick look, not a "
                      f"benchmark figure.", ""]
        lines += _table(["suite", "task", "metric", "score", "examples"], rows)
    return lines


def usage_section(repo_id: str) -> list[str]:
    return ["## Usage", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'tok = AutoTokenizer.from_pretrained("{repo_id}")  # left padding: ready for batched generate()',
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            'batch = tok(["ប្រទេសកម្ពុជា", "Phnom Penh is"], padding=True, return_tensors="pt")',
            "out = model.generate(**batch, max_new_tokens=40, do_sample=True, top_p=0.9,",
            "                     pad_token_id=tok.pad_token_id)",
            "print(tok.batch_decode(out, skip_special_tokens=True))", "```", ""]


def chat_usage_section(repo_id: str) -> list[str]:
    return ["## Usage", "", "Prompts go through the tokenizer's chat template (role markers `<|system|>`, `<|user|>`, "
            "`<|assistant|>`, each turn closed by `<|end|>`); generation stops at `<|end|>` "
            "(generation_config.json).", "",
            "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'tok = AutoTokenizer.from_pretrained("{repo_id}")',
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            'messages = [{"role": "user", "content": "តើរាជធានីនៃប្រទេសកម្ពុជាគឺជាអ្វី?"}]',
            "batch = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, "
            "return_tensors=\"pt\")",
            "out = model.generate(**batch, max_new_tokens=100, do_sample=True, top_p=0.9, "
            "pad_token_id=tok.pad_token_id)",
            'print(tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True))', "```", ""]


def sft_data_section(data: dict | None) -> list[str]:
    lines = ["## Instruction-tuning data", ""]
    if not data:
        return lines + ["The SFT run's manifest records no conversations.", ""]
    rows = [[_source_label({"path": name}), c.get("read", "-"), c.get("kept", "-"), c.get("train", "-"),
             c.get("validation", "-")] for name, c in (data.get("counts") or {}).items()]
    lines += ["Conversations (read; kept after normalization, quality filters and deduplication; used for "
              "training; held out for validation):", ""]
    lines += _table(["source", "read", "kept", "train", "validation"], rows)
    shares = data.get("shares") or {}
    if shares:
        lines += [f"{data.get('train_conversations', 0):,} training conversations: "
                  + ", ".join(f"{_lang(lang)} {share:.1%}" for lang, share in shares.items()) + ".", ""]
    return lines


def sft_training_section(model_config: dict, sft: dict, parameters) -> list[str]:
    cfg = sft.get("config", {})
    rows = _shape_rows(model_config, parameters)
    method = sft.get("method", cfg.get("method", "-"))
    rows.append(["method", "full fine-tuning (every weight)" if method == "full" else
                 "LoRA, merged into the weights" if method == "lora" else method])
    if method == "lora":
        rows += [["LoRA rank", cfg.get("lora_rank", "-")], ["LoRA alpha", _plain(cfg.get("lora_alpha", "-"))],
                 ["LoRA targets", ", ".join(cfg.get("lora_targets") or []) or "-"]]
    rows += [["added tokens", " ".join(f"`{t}`" for t in sft.get("added_tokens") or []) or "none"],
             ["packed block (tokens)", sft.get("block_size", "-")]]
    rows += [[label, _plain(cfg.get(key, "-"))] for key, label in (
        ("learning_rate", "peak learning rate"), ("lr_schedule", "schedule"), ("warmup", "warmup"),
        ("weight_decay", "weight decay"), ("max_grad_norm", "gradient clipping"), ("epochs", "epochs"),
        ("micro_batch_size", "micro-batch (sequences per device)"),
        ("gradient_accumulation", "gradient accumulation"), ("seed", "seed"))]
    rows += [["optimizer steps", sft.get("global_step", "-")]]
    rows += _validation_rows(sft.get("final_validation", {}))
    return ["## Instruction tuning", ""] + _table(["setting", "value"], rows)


def _parameters(model_dir: Path) -> int | None:
    """The number of weights in model.safetensors, from its header (None if unreadable or sharded)."""
    try:
        with open(model_dir / "model.safetensors", "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _model_label(path: str) -> str:
    """A model by its Hub id, or a local folder by its last two parts (``run/final``): its path is the user's business."""
    p = Path(path)
    if not p.exists() and path.count("/") == 1:
        return f"`{path}`"
    return f"`{p.parent.name}/{p.name}`" if p.name == "final" and p.parent.name else f"`{p.name}`"


def sft_card(model_dir: Path, repo_id: str, model_config: dict, sft: dict, report: dict | None,
             license: str) -> str:
    """The card of an instruction-tuned model (train_sft.py's ``final/``); ``sft`` is the SFT run's manifest
    (or the model's own, which records the same)."""
    base = str(sft.get("base_model") or sft.get("config", {}).get("model_dir") or "")
    base_manifest = _manifest(base, "model") if base else None
    base_cfg = (base_manifest or {}).get("config", {})
    tok_dir = sft.get("config", {}).get("tokenizer_dir") or base_cfg.get("tokenizer_dir")
    n_params = _parameters(model_dir)
    size = f"{n_params / 1e6:,.1f}M-parameter " if n_params else ""
    method = sft.get("method", "full")
    how = ("full fine-tuning of every weight" if method == "full" else
           f"LoRA adapters of rank {sft.get('config', {}).get('lora_rank', '?')}, merged into the weights")
    convs = (sft.get("data") or {}).get("train_conversations")
    base_what = "its base model"
    if base_manifest is not None:
        base_what = ("a tonsai base model pretrained from scratch" if base_manifest.get("start") != "weights" else
                     "a tonsai base model (continued pretraining)")
    body = [f"# {repo_id.split('/')[-1]}", "",
            f"A {size}{model_config.get('model_type', 'causal')} instruction-tuned (SFT) chat model for Khmer and "
            f"English, made with tonsai by supervised fine-tuning ({how}) of {_model_label(base) if base else 'a base model'}, "
            f"{base_what}, on {f'{convs:,} ' if isinstance(convs, int) else ''}conversations.", ""]
    body += chat_usage_section(repo_id)
    body += sft_data_section(sft.get("data"))
    if base_manifest is None:
        body += ["## Base model", "", f"The base model's manifest ({base or 'unknown folder'}) was not available when "
                 "this card was written.", ""]
    else:
        body += data_section(_manifest(base_cfg.get("dataset_dir"), "prepare"), base_cfg.get("dataset_dir"),
                             title="Base model's pretraining data")
    tok_manifest = _manifest(tok_dir, "tokenizer")
    fertility_report = _read_json(Path(tok_dir) / "fertility.json") if tok_dir else None
    body += tokenizer_section(tok_manifest, fertility_report, tok_dir)
    body += sft_training_section(model_config, sft, n_params)
    body += eval_section(report)
    body += [INTENDED_USE_SFT, "", LIMITATIONS_SFT, ""]
    data_manifest = _manifest(base_cfg.get("dataset_dir"), "prepare")
    metadata = {"language": ["km", "en"], "license": license, "library_name": "transformers",
                "pipeline_tag": "text-generation", "datasets": hub_datasets(data_manifest),
                "tags": ["tonsai", model_config.get("model_type", "causal-lm"), "khmer", "text-generation",
                         "conversational", "sft", "instruction-tuned", *(["lora"] if method == "lora" else [])]}
    return _card_text(metadata, body)


def _card_text(metadata: dict, body: list[str]) -> str:
    """Metadata and body as one README.md, checked by huggingface_hub's ModelCard."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**{k: v for k, v in metadata.items() if v})
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body).rstrip() + "\n"
    card = ModelCard(text)  # parses the YAML back into ModelCardData: raises on malformed metadata
    parsed = card.data.to_dict()
    for key in ("language", "license", "library_name"):
        if key in metadata and parsed.get(key) != metadata[key]:
            raise StageError(f"model card metadata {key}: wrote {metadata[key]!r}, read back {parsed.get(key)!r}")
    return text


def _same_folder(recorded: str | None, folder: Path) -> bool:
    try:
        return bool(recorded) and Path(recorded).is_dir() and Path(recorded).samefile(folder)
    except OSError:
        return False


def check_report_model(model_dir: Path, model_manifest: dict | None, report: dict) -> None:
    """Refuse an eval_model.py report of another model than ``model_dir``.

    The report records the folder it evaluated (``model_dir``, as given then) and its tokenizer's hash; its
    manifest records the creation time of that model's manifest.json, which a copy of the model keeps and a
    new training writes anew. The report is this model's when those agree (or, for a model without a
    manifest, when its recorded folder is this one)."""
    recorded = report.get("model_dir")
    where = report.get("path", "report.json")
    eval_manifest = _manifest(Path(where).parent, "eval") or {}
    made, created = eval_manifest.get("model_manifest_created"), (model_manifest or {}).get("created_utc")
    tok = report.get("tokenizer_sha256")
    own_tok = file_sha256(model_dir / "tokenizer.json") if tok and (model_dir / "tokenizer.json").is_file() else None
    problem = None
    if made and created and made != created:
        problem = f"it evaluates {recorded}, a model made {made}, not {model_dir} (made {created})"
    elif tok and own_tok and tok != own_tok:
        problem = f"it evaluates {recorded}, whose tokenizer differs from {model_dir}'s"
    elif not ((made and created) or _same_folder(recorded, model_dir)):
        problem = f"it evaluates {recorded}, and nothing it records shows that this is {model_dir}"
    if problem:
        raise StageError(f"--eval-dir {where}: {problem}. Evaluate this model (uv run python scripts/eval_model.py "
                         f"--model-dir {model_dir} --output-dir NEW_FOLDER ...) and pass that folder as --eval-dir, "
                         f"or leave --eval-dir out")


def check_license(license: str) -> None:
    if not LICENSE_RE.fullmatch(license):
        raise StageError(f"--license {license!r}: use a Hub license id such as apache-2.0, mit, cc-by-4.0 or "
                         "other (https://huggingface.co/docs/hub/repositories-licenses)")


def model_card(model_dir: str | Path, repo_id: str, eval_dir: str | Path | None = None,
               license: str = "other") -> str:
    """The README.md text for the model folder ``model_dir`` (train_gpt2.py's ``final/``)."""
    check_license(license)
    model_dir = Path(model_dir)
    model_config = _read_json(model_dir / "config.json")
    if model_config is None:
        raise StageError(f"{model_dir}: no readable config.json; pass a model folder (train_gpt2.py's final/)")
    model_manifest = _manifest(model_dir, "model")
    if eval_dir and not (Path(eval_dir) / "report.json").is_file() and not Path(eval_dir).is_file():
        raise StageError(f"--eval-dir {eval_dir}: no report.json there; pass a folder written by eval_model.py")
    report = load_report(eval_dir) if eval_dir else None
    if report is not None:
        check_report_model(model_dir, model_manifest, report)
    sft = _manifest(model_dir.parent, "sft")
    if sft is None and (model_manifest or {}).get("method") in ("full", "lora"):
        sft = model_manifest  # a train_sft.py final/ copied away from its run: its own manifest records the same
    if sft is not None:
        return sft_card(model_dir, repo_id, model_config, sft, report, license)
    run_manifest = _manifest(model_dir.parent, "train")
    cfg = (model_manifest or {}).get("config", {})
    data_manifest = _manifest(cfg.get("dataset_dir"), "prepare")
    tok_dir = cfg.get("tokenizer_dir")
    tok_manifest = _manifest(tok_dir, "tokenizer")
    fertility_report = _read_json(Path(tok_dir) / "fertility.json") if tok_dir else None
    n_params = (model_manifest or {}).get("parameters")
    size = f"{n_params / 1e6:,.1f}M-parameter " if isinstance(n_params, int) else ""
    body = [f"# {repo_id.split('/')[-1]}", "",
            f"A {size}{model_config.get('model_type', 'causal')} base language model for Khmer and English, "
            "pretrained from scratch with tonsai, a Khmer-English GPT-2 pretraining toolkit. "
            "It is not instruction-tuned.", ""]
    if (model_manifest or {}).get("start") == "weights":
        body[-2] = body[-2].replace("pretrained from scratch", f"continued from `{model_manifest.get('resumed_from')}`")
    body += usage_section(repo_id)
    body += data_section(data_manifest, cfg.get("dataset_dir"))
    body += tokenizer_section(tok_manifest, fertility_report, tok_dir)
    body += training_section(model_config, model_manifest, run_manifest)
    body += eval_section(report)
    body += [INTENDED_USE, "", LIMITATIONS, ""]
    metadata = {"language": ["km", "en"], "license": license, "library_name": "transformers",
                "pipeline_tag": "text-generation", "datasets": hub_datasets(data_manifest),
                "tags": ["tonsai", model_config.get("model_type", "causal-lm"), "khmer", "text-generation",
                         "base-model"]}
    return _card_text(metadata, body)


def tokenizer_card(tokenizer_dir: str | Path, repo_id: str, license: str = "other") -> str:
    """The README.md text for a tokenizer folder written by train_tokenizer.py."""
    check_license(license)
    tokenizer_dir = Path(tokenizer_dir)
    tok_manifest = _manifest(tokenizer_dir, "tokenizer")
    if tok_manifest is None:
        raise StageError(f"{tokenizer_dir}: no tokenizer manifest.json; pass a folder written by train_tokenizer.py")
    data_manifest = _manifest(tok_manifest.get("config", {}).get("dataset_dir"), "prepare")
    body = [f"# {repo_id.split('/')[-1]}", "", "A Khmer-English tokenizer trained with tonsai.", "",
            "```python", "from transformers import AutoTokenizer", "",
            f'tok = AutoTokenizer.from_pretrained("{repo_id}")', 'print(tok("ខ្ញុំស្រឡាញ់ភាសាខ្មែរ").input_ids)',
            "```", ""]
    body += tokenizer_section(tok_manifest, _read_json(tokenizer_dir / "fertility.json"), str(tokenizer_dir))
    if data_manifest is not None:
        body += data_section(data_manifest, None)
    body += ["## Limitations", "", KHMER_SPECIFICS, ""]
    metadata = {"language": ["km", "en"], "license": license, "library_name": "transformers",
                "datasets": hub_datasets(data_manifest), "tags": ["tonsai", "tokenizer", "khmer", "bpe"]}
    return _card_text(metadata, body)
