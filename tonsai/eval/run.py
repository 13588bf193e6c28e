"""The evaluation stage (scripts/eval_model.py): per-language perplexity and bits per byte of a
trained model on a prepared dataset's validation split, written as report.json and report.md."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from tonsai.atomic import staged_dir
from tonsai.cli import StageError
from tonsai.eval.report import SCHEMA_VERSION, write_report
from tonsai.manifest import MANIFEST_NAME, read_manifest, write_manifest

log = logging.getLogger(__name__)
STAGE = "eval"


@dataclasses.dataclass
class EvalConfig:
    """Options of scripts/eval_model.py."""

    model_dir: str = dataclasses.field(metadata={"help": "model folder (a run's final/ or any HF causal-LM folder)"})
    dataset_dir: str = dataclasses.field(metadata={"help": "folder written by prepare_dataset.py"})
    output_dir: str = dataclasses.field(metadata={"help": "folder to write report.json, report.md, manifest.json"})
    split: str = dataclasses.field(default="validation", metadata={"help": "split of --dataset-dir to score"})
    block_size: int | None = dataclasses.field(default=None, metadata={
        "help": "window length in tokens (default: the model's context length, at most 2048)"})
    stride: int | None = dataclasses.field(default=None, metadata={
        "help": "tokens each window advances (default: half the window)"})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "windows per forward pass"})
    device: str = dataclasses.field(default="auto", metadata={
        "help": "cuda when available, else cpu", "choices": ["auto", "cuda", "cpu"]})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.block_size is not None and self.block_size < 2:
            raise ValueError("--block-size must be at least 2")
        if self.stride is not None and self.stride < 1:
            raise ValueError("--stride must be at least 1")


def run_eval(cfg: EvalConfig) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.data.prepare import load_prepared
    from tonsai.eval.perplexity import score_texts
    from tonsai.model.build import context_length

    model_dir = Path(cfg.model_dir)
    if not (model_dir / "config.json").is_file():
        raise StageError(f"--model-dir {model_dir}: no config.json; pass a run's final/ folder or a HF model folder")
    model_manifest = read_manifest(model_dir, "model") if (model_dir / MANIFEST_NAME).is_file() else None
    dd, _ = load_prepared(cfg.dataset_dir)
    if cfg.split not in dd:
        raise StageError(f"{cfg.dataset_dir} has no split {cfg.split!r}; it has {sorted(dd)}")
    ds = dd[cfg.split]
    if len(ds) == 0:
        raise StageError(f"{cfg.dataset_dir} split {cfg.split!r} is empty: nothing to evaluate")

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise StageError(f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but the model only "
                         f"{model.get_input_embeddings().num_embeddings} embeddings: they do not belong together")
    block = cfg.block_size or min(context_length(model.config), 2048)
    stride = cfg.stride or max(1, block // 2)
    if stride > block:
        raise StageError(f"--stride {stride} is larger than the window {block}")

    langs: dict[str, list[str]] = {}
    for text, lang in zip(ds["text"], ds["lang"]):
        langs.setdefault(lang, []).append(text)
    results = {}
    for lang in sorted(langs):
        score = score_texts(model, tokenizer, langs[lang], block, stride, cfg.batch_size, device,
                            progress=f"eval {lang}")
        results[lang] = score.as_dict()
        log.info("%s: loss %.4f, perplexity %.2f, %.4f bits/byte, %.4f bits/char (%d docs, %d tokens)",
                 lang, results[lang]["loss"], results[lang]["perplexity"], results[lang]["bits_per_byte"],
                 results[lang]["bits_per_char"], score.documents, score.tokens)
    report = {
        "schema_version": SCHEMA_VERSION,
        "model_dir": str(model_dir),
        "dataset_dir": str(cfg.dataset_dir),
        "split": cfg.split,
        "block_size": block,
        "stride": stride,
        "languages": results,
    }
    with staged_dir(cfg.output_dir) as tmp:
        write_report(tmp, report)
        write_manifest(tmp, STAGE, cfg, model_manifest_created=model_manifest and model_manifest["created_utc"],
                       languages=sorted(results))
    log.info("report written to %s", Path(cfg.output_dir) / "report.md")
    return report
