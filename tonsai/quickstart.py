"""The whole pipeline on the sample corpus shipped in tonsai/sample_corpus, on CPU, in minutes.

prepare -> tokenizer -> train (tiny GPT-2) -> evaluate -> instruction-tune (the shipped
conversations) -> evaluate the tuned model with its chat template beside the base model, each stage
writing its own folder under ``--output-dir``. It calls the same stage functions as the scripts,
so a green quickstart means the pipeline works end to end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.eval.run import EvalConfig, run_eval
from tonsai.sft.config import SftConfig
from tonsai.sft.run import run_sft
from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
from tonsai.train.config import TrainConfig
from tonsai.train.run import run_train

log = logging.getLogger(__name__)
SAMPLE_DIR = Path(__file__).parent / "sample_corpus"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class QuickstartConfig:
    """Options of scripts/quickstart.py."""

    output_dir: str = dataclasses.field(default="runs/quickstart", metadata={
        "help": "folder for every stage's output (data, tokenizer, run, eval, sft, eval-sft)"})
    khmer_weight: float = dataclasses.field(default=0.5, metadata={"help": "Khmer share of training characters"})
    english_weight: float = dataclasses.field(default=0.5, metadata={"help": "English share of training characters"})
    vocab_size: int = dataclasses.field(default=1024, metadata={"help": "tokenizer vocabulary size"})
    model_config: str = dataclasses.field(default=str(REPO_ROOT / "configs/model/gpt2_tiny.json"), metadata={
        "help": "model config JSON"})
    max_steps: int = dataclasses.field(default=100, metadata={"help": "training steps"})
    block_size: int = dataclasses.field(default=128, metadata={"help": "tokens per training sequence"})
    deepspeed: str | None = dataclasses.field(default=None, metadata={
        "help": "DeepSpeed JSON to train under, e.g. configs/deepspeed/zero2_h100.json (on CPU the first "
                "run compiles a communication op, about a minute)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed for every stage"})
    suite: bool = dataclasses.field(default=True, metadata={
        "help": "run the Khmer core prompt suite (eval_suites/khmer_core) in the evaluation"})
    sft_steps: int = dataclasses.field(default=40, metadata={
        "help": "instruction-tuning steps on the shipped conversations (0: stop after the base model)"})

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError("--max-steps must be at least 1")
        if self.sft_steps < 0:
            raise ValueError("--sft-steps must be >= 0")


STAGES = 6


def _banner(i: int, name: str) -> None:
    print(f"\n=== [{i}/{STAGES}] {name} ===", flush=True)


def run_quickstart(cfg: QuickstartConfig) -> dict:
    out = Path(cfg.output_dir)
    timings = {}
    t0 = time.perf_counter()

    _banner(1, "prepare: normalize, route, filter, deduplicate, split, mix")
    data_dir = out / "data"
    run_prepare(PrepareConfig(
        output_dir=str(data_dir), khmer=[str(SAMPLE_DIR / "km.txt")], english=[str(SAMPLE_DIR / "en.txt")],
        khmer_weight=cfg.khmer_weight, english_weight=cfg.english_weight, validation_fraction=0.1,
        min_validation_docs=3, seed=cfg.seed, overwrite=True))
    timings["prepare"] = time.perf_counter() - t0

    _banner(2, "tokenizer: shared BPE with byte fallback")
    t = time.perf_counter()
    tok_dir = out / "tokenizer"
    run_train_tokenizer(TokenizerConfig(output_dir=str(tok_dir), dataset_dir=str(data_dir), vocab_size=cfg.vocab_size,
                                        overwrite=True))
    timings["tokenizer"] = time.perf_counter() - t

    _banner(3, f"train: tiny GPT-2 for {cfg.max_steps} steps on CPU")
    t = time.perf_counter()
    run_dir = out / "run"
    run_train(TrainConfig(
        dataset_dir=str(data_dir), tokenizer_dir=str(tok_dir), model_config=cfg.model_config,
        output_dir=str(run_dir), deepspeed=cfg.deepspeed, block_size=cfg.block_size, micro_batch_size=8,
        max_steps=cfg.max_steps, learning_rate=2e-3, warmup=0.05, eval_steps=max(1, cfg.max_steps // 10),
        save_steps=cfg.max_steps, save_total_limit=1, logging_steps=1,
        seed=cfg.seed, device="cpu", dataloader_workers=0, overwrite=True))
    timings["train"] = time.perf_counter() - t

    _banner(4, "evaluate: per-language perplexity, bits per sentence, the Khmer core prompt suite")
    t = time.perf_counter()
    eval_dir = out / "eval"
    report = run_eval(EvalConfig(
        model_dir=str(run_dir / "final"), dataset_dir=str(data_dir), output_dir=str(eval_dir), device="cpu",
        parallel=[str(SAMPLE_DIR / "km.txt"), str(SAMPLE_DIR / "en.txt")],
        suite=[str(REPO_ROOT / "eval_suites" / "khmer_core")] if cfg.suite else [], overwrite=True))
    timings["eval"] = time.perf_counter() - t
    paths = {"data": str(data_dir), "tokenizer": str(tok_dir), "run": str(run_dir), "eval": str(eval_dir)}
    if cfg.sft_steps:
        eval_dir, sft_report = _instruction_tune(cfg, out, run_dir / "final", data_dir, eval_dir, timings)
        paths.update(sft=str(out / "sft"), eval_sft=str(eval_dir))
        report = {**report, "sft": sft_report}
    timings["total"] = time.perf_counter() - t0

    print("\n" + (eval_dir / "report.md").read_text(encoding="utf-8"))
    print("stage times: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    print(f"report: {eval_dir / 'report.md'} (with plots: {eval_dir / 'report.html'}; "
          f"machine-readable: {eval_dir / 'report.json'})")
    return {"report": report, "timings": timings, "paths": paths}


def _instruction_tune(cfg: QuickstartConfig, out: Path, base: Path, data_dir: Path, base_eval: Path,
                      timings: dict) -> tuple[Path, dict]:
    """Stages 5 and 6: tune the base model on the shipped conversations, then evaluate it with its chat
    template, its report set beside the base model's (--compare). Returns (eval folder, its report)."""
    _banner(5, f"instruction-tune: {cfg.sft_steps} steps on the shipped Khmer and English conversations")
    t = time.perf_counter()
    sft_dir = out / "sft"
    run_sft(SftConfig(
        model_dir=str(base), data=[str(SAMPLE_DIR / "conversations.jsonl"), str(SAMPLE_DIR / "instructions.jsonl")],
        output_dir=str(sft_dir), micro_batch_size=4, max_steps=cfg.sft_steps,  # blocks of the model context
        learning_rate=1e-3, eval_steps=max(1, cfg.sft_steps // 4), save_steps=cfg.sft_steps, save_total_limit=1,
        logging_steps=1, validation_fraction=0.1, seed=cfg.seed, device="cpu", dataloader_workers=0,
        overwrite=True))
    timings["sft"] = time.perf_counter() - t

    _banner(6, "evaluate the tuned model (chat template) beside the base model")
    t = time.perf_counter()
    eval_dir = out / "eval-sft"
    report = run_eval(EvalConfig(
        model_dir=str(sft_dir / "final"), dataset_dir=str(data_dir), output_dir=str(eval_dir), device="cpu",
        window=cfg.block_size, stride=cfg.block_size // 2,  # the base model's evaluation set, so they compare
        parallel=[str(SAMPLE_DIR / "km.txt"), str(SAMPLE_DIR / "en.txt")],
        suite=[str(REPO_ROOT / "eval_suites" / "khmer_core")] if cfg.suite else [], chat=True,
        compare=[str(base_eval)], name="sft", overwrite=True))
    timings["eval_sft"] = time.perf_counter() - t
    return eval_dir, report


def validation_curve(run_dir: str | Path, lang: str) -> list[tuple[int, float]]:
    """(step, validation loss) pairs for ``lang`` from a run's metrics.jsonl."""
    points = []
    with open(Path(run_dir) / "metrics.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if f"eval_{lang}_loss" in rec:
                points.append((rec["step"], rec[f"eval_{lang}_loss"]))
    return points
