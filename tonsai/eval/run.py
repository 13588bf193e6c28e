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
import hashlib
import json
import logging
import math
from pathlib import Path

from tonsai.atomic import staged_dir, write_json, write_text
from tonsai.errors import StageError
from tonsai.eval.compare import check_comparable
from tonsai.eval.html import render_html
from tonsai.eval.inputs import check_parallel_files, dataset_sets, language_streams, parallel_pairs, text_sets
from tonsai.eval.report import SCHEMA_VERSION, load_report, render_markdown
from tonsai.eval.suites import check_distinct_names, check_fits, load_suite, run_suites
from tonsai.folders import claim_output
from tonsai.jsonl import json_lines
from tonsai.manifest import MANIFEST_NAME, file_sha256, read_manifest, tokenizer_hash, write_manifest
from tonsai.model.build import context_length
from tonsai.model.folder import check_model_folder
from tonsai.sft.config import FINGERPRINT

# torch, transformers and tonsai.eval.perplexity (which imports torch) are imported inside the functions
# that run a model: torch 1.7 s, AutoModelForCausalLM 2.4 s with it, on a 2-core machine. eval_model.py
# --help, the input checks that run before the model loads, and safety_check.py (it imports default_name
# and load_model from here) must not pay that.

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
    chat: bool = dataclasses.field(default=False, metadata={
        "help": "put every suite prompt in the tokenizer's chat template as a user turn (models tuned with "
                "train_sft.py); compare with the base model's report through --compare"})
    compare: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "earlier eval output folders (or their report.json) to show side by side with this one",
        "metavar": "DIR"})
    name: str | None = dataclasses.field(default=None, metadata={
        "help": "label of this model in reports and comparisons (default: the run folder's name)"})
    split: str = dataclasses.field(default="validation", metadata={"help": "split of --dataset-dir to score"})
    window: int | None = dataclasses.field(default=None, metadata={
        "help": "window length in tokens (default: the training block recorded in the run's manifest, else "
                "the model's context length, at most 2048)"})
    stride: int | None = dataclasses.field(default=None, metadata={
        "help": "tokens each window advances (default: the run's --eval-stride, else half the window)"})
    max_tokens: int | None = dataclasses.field(default=None, metadata={
        "help": "score at most this many tokens of each language (the start of its stream), like training's "
                "--eval-max-tokens (default: all)"})
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
        if self.window is not None and self.window < 2:
            raise ValueError("--window must be at least 2")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("--max-tokens must be at least 1")
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

    The step is ``step_total`` when a row has it (continual pretraining counts on from the base
    model's steps), else ``step`` plus the offset of the nearest earlier row that has both (the first
    such row for rows before it), else ``step``. A resumed run appends to the same file; a step logged
    twice keeps its last value."""
    records = [rec for _, rec in json_lines(path, "; the metrics file is damaged") if rec.get("step") is not None]
    offset = next((r["step_total"] - r["step"] for r in records if r.get("step_total") is not None), 0)
    curves: dict[str, dict[int, float]] = {}
    for rec in records:
        if rec.get("step_total") is not None:
            offset = rec["step_total"] - rec["step"]
        step = rec["step"] + offset
        if "loss" in rec:
            curves.setdefault("train", {})[step] = rec["loss"]
        for key, value in rec.items():
            if key.startswith("eval_") and key.endswith("_loss"):
                curves.setdefault(key[len("eval_"):-len("_loss")], {})[step] = value
    return {k: [[s, v] for s, v in sorted(d.items())] for k, d in curves.items()}


def load_model(model_dir: Path, tokenizer_dir: str | None, device: str):
    """Model and tokenizer, with the checks that they belong together."""
    import torch
    from transformers import AutoModelForCausalLM

    from tonsai.tokenizer.export import load_tokenizer

    check_model_folder(model_dir, tokenizer_dir)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else model_dir
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = load_tokenizer(tok_dir, model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    n_emb = model.get_input_embeddings().num_embeddings
    if n_emb < len(tokenizer):
        raise StageError(f"{model_dir}: the tokenizer from {tok_dir} has {len(tokenizer)} tokens but the model only "
                         f"{n_emb} embeddings: they do not belong together; pass the tokenizer the model was "
                         "trained with (--tokenizer-dir)")
    if tokenizer.eos_token_id is None:
        raise StageError(f"{tok_dir}: the tokenizer has no end-of-text (eos) token; evaluation needs one as the "
                         "document separator")
    return model, tokenizer, dtype


def _tokenizer_sha(tok_dir: Path) -> str | None:
    return tokenizer_hash(tok_dir) if (tok_dir / "tokenizer.json").is_file() else None


def run_window(model_dir: Path, _seen: tuple = ()) -> tuple[int | None, int | None, str | None]:
    """The training block and validation stride of the run that made ``model_dir``, from the model's
    manifest (a run's final/) or the run folder's (a checkpoint-N/), and where they were read.

    A model tuned by train_sft.py gets its base model's (the SFT manifest's ``eval_window``, or, for
    one written before it, the manifest of its ``base_model`` when that folder is still there): its
    own block is the length of its packed conversations, and a window of it would put the tuned model
    on another evaluation set than the base, which --compare refuses. (None, None, None) when there is
    none: the model's context, as for the base."""
    folders = [model_dir] + ([model_dir.parent] if model_dir.name.startswith("checkpoint-") else [])
    for folder in folders:
        if (folder / MANIFEST_NAME).is_file():
            m = read_manifest(folder)
            if m.get("stage") in ("model", "sft") and "eval_window" in m:
                return _recorded_window(m["eval_window"], folder / MANIFEST_NAME)
            if m.get("stage") in ("model", "sft") and m.get("method") and m.get("base_model"):  # older SFT
                base = Path(m["base_model"])
                if (base / MANIFEST_NAME).is_file() and base.resolve() not in _seen:
                    block, stride, where = run_window(base, (*_seen, base.resolve()))
                    return block, stride, where and f"{where}, via {folder / MANIFEST_NAME}"
                return None, None, None
            if m.get("stage") in ("model", "train") and m.get("block_size"):
                return int(m["block_size"]), (m.get("config") or {}).get("eval_stride"), str(folder / MANIFEST_NAME)
    run_file = model_dir.parent / FINGERPRINT  # a checkpoint of an SFT run that has not finished
    if model_dir.name.startswith("checkpoint-") and run_file.is_file():
        return _recorded_window(json.loads(run_file.read_text(encoding="utf-8")).get("eval_window"), run_file)
    return None, None, None


def _recorded_window(window: dict | None, where: Path) -> tuple[int | None, int | None, str | None]:
    """An SFT run's ``eval_window`` (:func:`sft_eval_window`), read from ``where``."""
    w = window or {}
    if not w.get("block_size"):
        return None, None, None
    return int(w["block_size"]), w.get("eval_stride"), f"{w.get('from')}, via {where}"


def sft_eval_window(base_model_dir: str | Path) -> dict:
    """What train_sft.py records as ``eval_window`` in its manifests: the window eval_model.py gives
    its base model (:func:`run_window`), so that the tuned model is scored on the base's evaluation set."""
    block, stride, where = run_window(Path(base_model_dir))
    return {"block_size": block, "eval_stride": stride, "from": where}


def _perplexity(model, tokenizer, sets, block: int, stride: int, batch_size: int, device: str,
                max_tokens: int | None):
    """Per language: one stream of all its documents (see :func:`tonsai.eval.inputs.language_streams`),
    the definition training's validation uses. Per source: that source's tokens within its language's
    stream (same windows, same context), so the sources of a language sum to it."""
    from tonsai.eval.perplexity import LanguageScore, score_documents

    languages, by_source = {}, {}
    for stream in language_streams(sets):
        names = list(dict.fromkeys(stream.sources))
        index = {name: i for i, name in enumerate(names)}
        scores = score_documents(model, tokenizer, stream.texts, [index[s] for s in stream.sources], len(names),
                                 block, stride, batch_size, device, max_tokens, progress=stream.lang)
        total = LanguageScore(0, 0, 0, 0, 0.0)
        for name, sc in zip(names, scores):
            if sc.tokens:
                by_source[name] = {"lang": stream.lang, **sc.as_dict()}
            for field in ("documents", "tokens", "bytes", "characters", "nll_nats"):
                setattr(total, field, getattr(total, field) + getattr(sc, field))
        languages[stream.lang] = m = total.as_dict()
        log.info("%s: loss %.4f, perplexity %.2f, %.4f bits/byte, %.4f bits/char (%d docs, %d tokens)",
                 stream.lang, m["loss"], m["perplexity"], m["bits_per_byte"], m["bits_per_char"], m["documents"],
                 m["tokens"])
    return languages, by_source


def _parallel(model, tokenizer, km_file: str, en_file: str, batch_size: int, device: str) -> dict:
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


def suite_digest(suite) -> str:
    """SHA-256 of a suite's tasks as scored: names, types, metrics and every rendered request (prompt,
    references, choices, answer), so the same items read from another path give the same digest."""
    body = [[t.name, t.type, t.metrics, t.max_new_tokens, t.stop,
             [{k: v for k, v in dataclasses.asdict(r).items() if k != "where"} for r in t.requests]]
            for t in suite.tasks]
    return hashlib.sha256(json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _window(cfg: EvalConfig, model_dir: Path) -> tuple[int, int, str]:
    """Window and stride: explicit flags, else the run's training block and validation stride, else the
    model's context (capped at 2048) and half of it; and where the window came from."""
    run_block, run_stride, where = run_window(model_dir)
    if cfg.window:
        block, origin = cfg.window, "--window"
    elif run_block:
        block, origin = run_block, f"training block ({where})"
    else:
        from transformers import AutoConfig

        block, origin = min(context_length(AutoConfig.from_pretrained(str(model_dir))), 2048), "model context"
        log.info("no run manifest beside %s: windows of the model's context, %d tokens (pass --window to choose)",
                 model_dir, block)
    default_stride = run_stride if (run_block and not cfg.window and run_stride) else max(1, block // 2)
    stride = cfg.stride or default_stride
    if stride > block:
        raise StageError(f"--stride {stride} is larger than the window {block}")
    return block, stride, origin


def _inputs(cfg: EvalConfig) -> tuple[list, dict, list]:
    """The documents to score, the evaluation set the report records (:mod:`tonsai.eval.compare`;
    the caller fills in the window and stride) and the suites, loaded. Reads every input file, so a bad
    --text or --parallel file or a malformed line fails before the model folder is read."""
    check_parallel_files(cfg.parallel)
    eval_set: dict = {"window": None, "stride": None, "max_tokens": cfg.max_tokens, "dataset": None}
    sets = []
    if cfg.dataset_dir:
        sets, eval_set["dataset"] = dataset_sets(cfg.dataset_dir, cfg.split)
    text, eval_set["text"] = text_sets(cfg.text)
    sets += text
    if cfg.parallel:
        km, en = cfg.parallel
        eval_set["parallel"] = {"km_file": km, "en_file": en, **{
            f"{side}_sha256": file_sha256(f) if Path(f).is_file() else None for side, f in (("km", km), ("en", en))}}
    suites = []
    if cfg.suite:
        eval_set["suites"] = []
        for p in cfg.suite:
            if not Path(p).exists():
                raise StageError(f"--suite {p}: no such file or folder (suites live in eval_suites/, e.g. "
                                 "eval_suites/khmer_core)")
            suite = load_suite(p)
            suites.append(suite)
            eval_set["suites"].append({"name": suite.name, "path": str(p), "sha256": suite_digest(suite),
                                       "limit": cfg.limit})
        check_distinct_names(suites)  # before the model loads, not after the perplexity
    return sets, eval_set, suites


def write_report(out_dir: str | Path, report: dict, compared: list[dict] = ()) -> None:
    """report.json, report.md and report.html (:mod:`tonsai.eval.report`, :mod:`tonsai.eval.html`)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report, list(compared)))
    write_text(out_dir / "report.html", render_html(report, list(compared)))


def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate into --output-dir, claimed and locked for the run (tonsai.folders): never a folder
    holding anything but an earlier evaluation, never inside a run, model or any input."""
    inputs = [p for p in (cfg.model_dir, cfg.dataset_dir, cfg.tokenizer_dir, cfg.metrics_file, *cfg.parallel,
                          *cfg.suite, *cfg.compare, *(t.partition("=")[2] for t in cfg.text)) if p]
    with claim_output(cfg.output_dir, STAGE, inputs=inputs, overwrite=cfg.overwrite):
        return _run_eval(cfg)


def _run_eval(cfg: EvalConfig) -> dict:
    import torch

    sets, eval_set, suites = _inputs(cfg)
    model_dir = Path(cfg.model_dir)
    check_model_folder(model_dir, cfg.tokenizer_dir)
    block, stride, window_from = _window(cfg, model_dir)
    eval_set.update(window=block, stride=stride)
    compared = check_comparable(eval_set, [load_report(p) for p in cfg.compare])  # before the slow part

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, dtype = load_model(model_dir, cfg.tokenizer_dir, device)
    model_manifest = read_manifest(model_dir) if (model_dir / MANIFEST_NAME).is_file() else None
    if block > context_length(model.config):
        raise StageError(f"window {block} ({window_from}) is longer than the model's context "
                         f"{context_length(model.config)}; pass a smaller --window")
    # every suite item fits the model's context: found now, not after the other tasks and perplexity ran
    check_fits(suites, tokenizer, context_length(model.config), cfg.limit, chat=cfg.chat)

    report: dict = {
        "schema_version": SCHEMA_VERSION,
        "name": cfg.name or default_name(model_dir),
        "model_dir": str(model_dir),
        "dataset_dir": str(cfg.dataset_dir) if cfg.dataset_dir else None,
        "split": cfg.split if cfg.dataset_dir else None,
        "block_size": block,
        "stride": stride,
        "window_from": window_from,
        "eval_set": eval_set,
        # loss and perplexity are per token of this tokenizer: --compare shows them only between equal ones
        "tokenizer_sha256": _tokenizer_sha(Path(cfg.tokenizer_dir) if cfg.tokenizer_dir else model_dir),
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "languages": {},
        "sources": {},
    }
    if sets:
        report["languages"], report["sources"] = _perplexity(model, tokenizer, sets, block, stride,
                                                              cfg.batch_size, device, cfg.max_tokens)
    if cfg.parallel:
        report["parallel"] = _parallel(model, tokenizer, *cfg.parallel, cfg.batch_size, device)
    if cfg.suite:
        results = run_suites(model, tokenizer, suites, device=device, batch_size=cfg.batch_size, limit=cfg.limit,
                             chat=cfg.chat)
        report["suites"] = results.scores
        report["suite_limit"] = cfg.limit
        report["suite_chat"] = cfg.chat
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
            write_json(tmp / "samples.json", samples)
        write_manifest(tmp, STAGE, cfg, model_manifest_created=model_manifest and model_manifest.get("created_utc"),
                       languages=sorted(report["languages"]), suites=sorted(report.get("suites", {})))
    log.info("report written to %s (and report.md, report.html)", Path(cfg.output_dir) / "report.json")
    return report
