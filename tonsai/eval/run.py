"""The evaluation stage (scripts/eval_model.py).

For a model folder (a run's ``final/``, a training checkpoint, or any Hugging Face causal LM):

- per language and per source: loss, perplexity, bits per byte and per character over sliding
  windows (:mod:`tonsai.eval.perplexity`), on a prepared dataset's split and/or ``--text`` files;
- on aligned parallel text: bits per sentence for Khmer against English;
- prompt suites from eval_suites/ (:mod:`tonsai.eval.suites`);
- the run's loss curves, read from the ``metrics.jsonl`` beside the model;

written as report.json (schema in :mod:`tonsai.eval.report`), report.md and a self-contained
report.html, optionally side by side with earlier reports (``--compare``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

from tonsai.atomic import staged_dir
from tonsai.cli import StageError
from tonsai.eval.report import SCHEMA_VERSION, load_report, write_report
from tonsai.folders import claim_output
from tonsai.manifest import MANIFEST_NAME, read_manifest, write_manifest

log = logging.getLogger(__name__)
STAGE = "eval"


@dataclasses.dataclass
class EvalConfig:
    """Options of scripts/eval_model.py."""

    model_dir: str = dataclasses.field(metadata={
        "help": "model folder: a run's final/, a training checkpoint-N/ folder, or any HF causal-LM folder"})
    output_dir: str = dataclasses.field(metadata={
        "help": "folder to write report.json, report.md, report.html and manifest.json into"})
    dataset_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "folder written by prepare_dataset.py: scores its --split per language and per source"})
    text: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "plain text to score, as LANG=FILE (.txt: a document per line; .jsonl: a 'text' field), "
                "e.g. --text km=news_km.txt en=news_en.txt", "metavar": "LANG=FILE"})
    parallel: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "two line-aligned files KM_FILE EN_FILE (e.g. FLORES-200 dev): bits per sentence, km against en",
        "metavar": "FILE"})
    suite: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "prompt suites to run: suite.yaml files or folders under eval_suites/", "metavar": "PATH"})
    limit: int | None = dataclasses.field(default=None, metadata={
        "help": "at most this many examples per suite task (quick looks; the report says so)"})
    tokenizer_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "tokenizer folder, when --model-dir has none (default: the model folder's own)"})
    metrics_file: str | None = dataclasses.field(default=None, metadata={
        "help": "a run's metrics.jsonl for the loss curves (default: the one beside --model-dir, if any)"})
    compare: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "earlier eval output folders (or their report.json) to show side by side with this one",
        "metavar": "DIR"})
    name: str | None = dataclasses.field(default=None, metadata={
        "help": "label of this model in reports and comparisons (default: the run folder's name)"})
    split: str = dataclasses.field(default="validation", metadata={"help": "split of --dataset-dir to score"})
    block_size: int | None = dataclasses.field(default=None, metadata={
        "help": "window length in tokens (default: the model's context length, at most 2048)"})
    stride: int | None = dataclasses.field(default=None, metadata={
        "help": "tokens each window advances (default: half the window)"})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "sequences per forward pass"})
    device: str = dataclasses.field(default="auto", metadata={
        "help": "cuda when available, else cpu (on cuda the model runs in bf16)", "choices": ["auto", "cuda", "cpu"]})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "replace an earlier evaluation in --output-dir (never anything else; never inside a run or "
                "model folder)"})

    def __post_init__(self) -> None:
        if not (self.dataset_dir or self.text or self.parallel or self.suite):
            raise ValueError("nothing to evaluate: give --dataset-dir, --text, --parallel and/or --suite")
        if self.parallel and len(self.parallel) != 2:
            raise ValueError(f"--parallel takes two files, KM_FILE EN_FILE; got {len(self.parallel)}")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.block_size is not None and self.block_size < 2:
            raise ValueError("--block-size must be at least 2")
        if self.stride is not None and self.stride < 1:
            raise ValueError("--stride must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be at least 1")


def default_name(model_dir: Path) -> str:
    """``runs/km50/final`` -> ``km50``; ``runs/km50/checkpoint-400`` -> ``km50@400``."""
    model_dir = model_dir.resolve()
    if model_dir.name == "final":
        return model_dir.parent.name
    if model_dir.name.startswith("checkpoint-"):
        return f"{model_dir.parent.name}@{model_dir.name.split('-', 1)[1]}"
    return model_dir.name


def find_metrics_file(model_dir: Path) -> Path | None:
    """The run's metrics.jsonl when ``model_dir`` is a run's final/ or checkpoint folder."""
    for cand in (model_dir / "metrics.jsonl", model_dir.parent / "metrics.jsonl"):
        if cand.is_file():
            return cand
    return None


def read_curves(path: Path) -> dict[str, list[list[float]]]:
    """Loss curves from metrics.jsonl: ``train`` (step, loss) and one (step, validation loss) per language.

    A resumed run appends to the same file; a step logged twice keeps its last value."""
    curves: dict[str, dict[int, float]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise StageError(f"{path}:{lineno}: malformed JSON ({e.msg}); the metrics file is damaged") from e
            step = rec.get("step")
            if step is None:
                continue
            if "loss" in rec:
                curves.setdefault("train", {})[step] = rec["loss"]
            for key, value in rec.items():
                if key.startswith("eval_") and key.endswith("_loss"):
                    curves.setdefault(key[len("eval_"):-len("_loss")], {})[step] = value
    return {k: [[s, v] for s, v in sorted(d.items())] for k, d in curves.items()}


def load_model(model_dir: Path, tokenizer_dir: str | None, device: str):
    """Model and tokenizer, with the checks that they belong together."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise StageError(f"--model-dir {model_dir}: no config.json; pass a run's final/ or checkpoint-N/ folder "
                         "or a Hugging Face model folder")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else model_dir
    if not ((tok_dir / "tokenizer.json").is_file() or (tok_dir / "tokenizer_config.json").is_file()):
        raise StageError(f"{tok_dir} has no tokenizer files; pass --tokenizer-dir with the tokenizer the model "
                         "was trained with")
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    n_emb = model.get_input_embeddings().num_embeddings
    if n_emb < len(tokenizer):
        raise StageError(f"{model_dir}: the tokenizer from {tok_dir} has {len(tokenizer)} tokens but the model only "
                         f"{n_emb} embeddings: they do not belong together; pass the tokenizer the model was "
                         "trained with (--tokenizer-dir)")
    if tokenizer.eos_token_id is None:
        raise StageError(f"{tok_dir}: the tokenizer has no end-of-text (eos) token; evaluation needs one as the "
                         "document separator")
    if tokenizer_dir and (model_dir / MANIFEST_NAME).is_file():
        from tonsai.tokenizer.pack import tokenizer_hash

        want = read_manifest(model_dir).get("tokenizer_sha256")
        if want and (tok_dir / "tokenizer.json").is_file() and tokenizer_hash(tok_dir) != want:
            raise StageError(f"{tok_dir} is not the tokenizer {model_dir} was trained with (its manifest records "
                             f"tokenizer hash {want[:12]}…); pass that tokenizer or leave out --tokenizer-dir")
    return model, tokenizer, dtype


def _perplexity(model, tokenizer, sets, block: int, stride: int, batch_size: int, device: str):
    from tonsai.eval.perplexity import LanguageScore, score_texts

    by_source, totals = {}, {}
    for s in sets:
        score = score_texts(model, tokenizer, s.texts, block, stride, batch_size, device,
                            progress=f"{s.lang} {s.source}")
        by_source[s.source] = {"lang": s.lang, **score.as_dict()}
        t = totals.setdefault(s.lang, LanguageScore(0, 0, 0, 0, 0.0))
        t.documents += score.documents
        t.tokens += score.tokens
        t.bytes += score.bytes
        t.characters += score.characters
        t.nll_nats += score.nll_nats
    languages = {lang: totals[lang].as_dict() for lang in sorted(totals)}
    for lang, m in languages.items():
        log.info("%s: loss %.4f, perplexity %.2f, %.4f bits/byte, %.4f bits/char (%d docs, %d tokens)",
                 lang, m["loss"], m["perplexity"], m["bits_per_byte"], m["bits_per_char"], m["documents"], m["tokens"])
    return languages, by_source


def _parallel(model, tokenizer, km_file: str, en_file: str, batch_size: int, device: str) -> dict:
    from tonsai.eval.inputs import parallel_pairs
    from tonsai.eval.perplexity import score_each

    km, en, skipped = parallel_pairs(km_file, en_file)
    try:
        km_nll, km_tok = score_each(model, tokenizer, km, batch_size, device, progress="parallel km")
        en_nll, en_tok = score_each(model, tokenizer, en, batch_size, device, progress="parallel en")
    except ValueError as e:
        raise StageError(f"--parallel: {e}") from e
    ln2 = math.log(2)
    km_bits = sum(km_nll) / ln2 / len(km)
    en_bits = sum(en_nll) / ln2 / len(en)
    out = {
        "km_file": str(km_file), "en_file": str(en_file), "pairs": len(km), "skipped_pairs": skipped,
        "km_bits_per_sentence": km_bits, "en_bits_per_sentence": en_bits,
        "km_en_bits_ratio": km_bits / en_bits,
        "km_tokens_per_sentence": sum(km_tok) / len(km), "en_tokens_per_sentence": sum(en_tok) / len(en),
        "km_wins": sum(a < b for a, b in zip(km_nll, en_nll)) / len(km),
    }
    log.info("parallel (%d pairs): km %.1f bits/sentence, en %.1f, ratio %.3f", len(km), km_bits, en_bits,
             out["km_en_bits_ratio"])
    return out


def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate into --output-dir, claimed and locked for the run (tonsai.folders): never a folder
    holding anything but an earlier evaluation, never inside a run, model or any input."""
    inputs = [p for p in (cfg.model_dir, cfg.dataset_dir, cfg.tokenizer_dir, cfg.metrics_file, *cfg.parallel,
                          *cfg.suite, *cfg.compare, *(t.partition("=")[2] for t in cfg.text)) if p]
    with claim_output(cfg.output_dir, STAGE, inputs=inputs, overwrite=cfg.overwrite):
        return _run_eval(cfg)


def _run_eval(cfg: EvalConfig) -> dict:
    import torch

    from tonsai.eval.inputs import check_parallel_files, dataset_sets, text_sets
    from tonsai.model.build import context_length

    model_dir = Path(cfg.model_dir)
    compared = [load_report(p) for p in cfg.compare]  # fail before the slow part
    sets = (dataset_sets(cfg.dataset_dir, cfg.split) if cfg.dataset_dir else []) + text_sets(cfg.text)
    check_parallel_files(cfg.parallel)  # a missing or binary file fails here, before the model loads
    if cfg.suite:
        from tonsai.eval.suites import load_suite

        for p in cfg.suite:  # a missing file or a malformed line fails here, before the model loads
            if not Path(p).exists():
                raise StageError(f"--suite {p}: no such file or folder (suites live in eval_suites/, e.g. "
                                 "eval_suites/khmer_core)")
            load_suite(p)

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, dtype = load_model(model_dir, cfg.tokenizer_dir, device)
    model_manifest = read_manifest(model_dir) if (model_dir / MANIFEST_NAME).is_file() else None
    block = cfg.block_size or min(context_length(model.config), 2048)
    stride = cfg.stride or max(1, block // 2)
    if stride > block:
        raise StageError(f"--stride {stride} is larger than the window {block}")

    report: dict = {
        "schema_version": SCHEMA_VERSION,
        "name": cfg.name or default_name(model_dir),
        "model_dir": str(model_dir),
        "dataset_dir": str(cfg.dataset_dir) if cfg.dataset_dir else None,
        "split": cfg.split if cfg.dataset_dir else None,
        "block_size": block,
        "stride": stride,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "languages": {},
        "sources": {},
    }
    if sets:
        report["languages"], report["sources"] = _perplexity(model, tokenizer, sets, block, stride,
                                                              cfg.batch_size, device)
    if cfg.parallel:
        report["parallel"] = _parallel(model, tokenizer, *cfg.parallel, cfg.batch_size, device)
    if cfg.suite:
        from tonsai.eval.suites import run_suites

        results = run_suites(model, tokenizer, cfg.suite, device=device, batch_size=cfg.batch_size, limit=cfg.limit)
        report["suites"] = results.scores
        report["suite_limit"] = cfg.limit
        samples = results.samples
    else:
        samples = None
    metrics_file = Path(cfg.metrics_file) if cfg.metrics_file else find_metrics_file(model_dir)
    if cfg.metrics_file and not metrics_file.is_file():
        raise StageError(f"--metrics-file {metrics_file}: no such file")
    if metrics_file:
        report["metrics_file"] = str(metrics_file)
        report["curves"] = read_curves(metrics_file)
    report["compare"] = [{"name": r["name"], "path": r["path"]} for r in compared]

    with staged_dir(cfg.output_dir) as tmp:
        write_report(tmp, report, compared)
        if samples:
            from tonsai.atomic import write_json

            write_json(tmp / "samples.json", samples)
        write_manifest(tmp, STAGE, cfg, model_manifest_created=model_manifest and model_manifest.get("created_utc"),
                       languages=sorted(report["languages"]), suites=sorted(report.get("suites", {})))
    log.info("report written to %s (and report.md, report.html)", Path(cfg.output_dir) / "report.json")
    return report
