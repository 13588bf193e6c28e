#!/usr/bin/env python
"""Muon against AdamW on the tiny presets (CPU): how many steps each needs to reach AdamW's final
validation loss, per language, and what a step costs.

Data: the shared Khmer and English text (../shared/data, the files bench_prepare.py reads) through
tonsai's own stages, once, cached under ``--work`` (train_variants.make_inputs): prepare, a
1,024-token tokenizer (the tiny presets' vocabulary), token folders for train and for each
language's validation split.

Each run trains one tiny preset (configs/model/gpt2_tiny.json or llama_tiny.json, dropout as the
preset has it) from a seed for ``--steps`` optimizer steps of 8 x 128 tokens, with the training
stage's settings: warmup 5% then cosine decay to 0 (transformers' ``get_cosine_schedule_with_warmup``,
the Trainer's), weight decay 0.1 on matrices (none on biases
and norm gains), gradient clipping at 1.0, AdamW betas (0.9, 0.95) (tonsai.train.arguments), and
the optimizer as ``--optimizer adamw`` or ``--optimizer muon`` builds it (tonsai.train.optim:
Muon on the block matrices, AdamW on the rest, one learning rate by RMS matching). It is a plain
loop, not the HF Trainer: the Trainer adds the same fixed cost to both optimizers and would only
slow the sweep. Every ``--eval-every`` steps the loss on the same ``--eval-blocks`` blocks of each
language's validation stream is recorded.

Method: for each preset and optimizer, a learning-rate sweep on seed 0 picks the rate with the
lowest final validation loss (mean of the languages), going a factor of 2 beyond the grid's end (at
most twice) when the best rate sits there; that rate then runs on every seed. AdamW's
target per language is its final loss averaged over seeds; Muon's steps-to-target is the first
evaluation where its seed-averaged loss is at or below that target (linear between evaluations).
What a step costs is timed apart, after the sweeps: both optimizers at their best rates, 10 steps
at a time in 6 alternating rounds (AdamW first, then Muon first, ...), the median step of each
(the sweeps ran every AdamW run before any Muon run, so a drifting machine would favour one).

  uv run python bench/bench_optim.py                          # both presets, 3 seeds, 300 steps
  uv run python bench/bench_optim.py --presets gpt2 --seeds 0 --steps 100 --lrs 2e-3   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "bench"))
from bench_prepare import EN_FILES, KM_FILES  # noqa: E402  (the same input files as the prepare bench)
from train_variants import make_inputs  # noqa: E402
from transformers import get_cosine_schedule_with_warmup  # noqa: E402

from tonsai.model.build import build_model, load_model_config  # noqa: E402
from tonsai.tokenizer.pack import TokenFile  # noqa: E402
from tonsai.train.arguments import ADAM_BETAS  # noqa: E402
from tonsai.train.optim import MuonAdamW, tag_muon_parameters  # noqa: E402

PRESETS = {"gpt2": REPO / "configs/model/gpt2_tiny.json", "llama": REPO / "configs/model/llama_tiny.json"}
LANGS = ("km", "en")
BLOCK, BATCH = 128, 8


def prepare_data(work: Path) -> dict[str, Path]:
    """Prepared dataset, tokenizer and token folders under ``work`` (made once, then reused)."""
    _, tok, tokens = make_inputs(work, [str(SHARED / f) for f in KM_FILES], [str(SHARED / f) for f in EN_FILES],
                                 vocab_size=1024, max_epochs=1.0)
    return {"tokenizer": tok, "train": tokens / "train", "val_km": tokens / "validation_km",
            "val_en": tokens / "validation_en"}


def make_optimizer(model, name: str, lr: float, momentum: float):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    if name == "muon":
        tag_muon_parameters(model)
        return MuonAdamW(groups, lr=lr, betas=ADAM_BETAS, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS)


@torch.no_grad()
def val_losses(model, val: dict[str, torch.Tensor]) -> dict[str, float]:
    model.eval()
    out = {lang: float(model(input_ids=x, labels=x).loss) for lang, x in val.items()}
    model.train()
    return out


def train_step(model, optimizer, schedule, x: torch.Tensor) -> torch.Tensor:
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def new_run(preset: str, opt: str, lr: float, seed: int, args):
    """Model, optimizer and the Trainer's schedule for --lr-schedule cosine (warmup from 0, then
    cosine decay to 0), as ``--optimizer opt`` builds them."""
    torch.manual_seed(seed)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.paths["tokenizer"])
    model = build_model(load_model_config(PRESETS[preset], tok))
    model.train()
    optimizer = make_optimizer(model, opt, lr, args.muon_momentum)
    return model, optimizer, get_cosine_schedule_with_warmup(optimizer, math.ceil(0.05 * args.steps), args.steps)


def step_cost(preset: str, lrs: dict[str, float], args, train_tokens, rounds: int = 6, steps: int = 10) -> dict:
    """Seconds a step of each optimizer, timed in alternating rounds (AdamW first in even rounds,
    Muon first in odd ones) so that a machine whose speed drifts favours neither: the medians."""
    runs = {opt: new_run(preset, opt, lr, args.seeds[0], args) for opt, lr in lrs.items()}
    times: dict[str, list[float]] = {opt: [] for opt in runs}
    x = torch.from_numpy(train_tokens[:BATCH * BLOCK].reshape(BATCH, BLOCK).astype(np.int64))
    for r in range(rounds):
        for opt in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            for _ in range(steps):
                t0 = time.perf_counter()
                train_step(*runs[opt], x)
                times[opt].append(time.perf_counter() - t0)
    return {opt: float(np.median(t[steps:])) for opt, t in times.items()}  # the first round warms up


def train_once(preset: str, opt: str, lr: float, seed: int, args, train_tokens, val) -> dict:
    model, optimizer, schedule = new_run(preset, opt, lr, seed, args)
    n_blocks = len(train_tokens) // BLOCK
    order = np.random.default_rng(seed).permutation(n_blocks)
    curve, step_times = [], []
    for step in range(args.steps):
        idx = order[(np.arange(BATCH) + step * BATCH) % n_blocks]
        x = torch.from_numpy(np.stack([train_tokens[i * BLOCK:(i + 1) * BLOCK] for i in idx]).astype(np.int64))
        t0 = time.perf_counter()
        loss = train_step(model, optimizer, schedule, x)
        step_times.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            return {"diverged_at": step + 1, "curve": curve, "step_s": float(np.median(step_times))}
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            curve.append({"step": step + 1, **val_losses(model, val)})
    return {"curve": curve, "step_s": float(np.median(step_times[5:] or step_times))}


def mean_curve(runs: list[dict]) -> list[dict]:
    """The seeds' mean validation curve; a seed that diverged has no place in it (an error)."""
    diverged = [r["diverged_at"] for r in runs if "diverged_at" in r]
    if diverged:
        raise SystemExit(f"a seed diverged (at step {diverged[0]}) at the sweep's best learning rate: "
                         "rerun with a lower --lrs grid")
    return [{"step": pts[0]["step"], **{lang: float(np.mean([p[lang] for p in pts])) for lang in LANGS}}
            for pts in zip(*(r["curve"] for r in runs))]


def steps_to(curve: list[dict], lang: str, target: float) -> float | None:
    """First step (interpolated between evaluations) where ``curve`` reaches ``target``, or None."""
    prev = None
    for p in curve:
        if p[lang] <= target:
            if prev is None or prev[lang] == p[lang]:
                return float(p["step"])
            frac = (prev[lang] - target) / (prev[lang] - p[lang])
            return prev["step"] + frac * (p["step"] - prev["step"])
        prev = p
    return None


def final_mean(run: dict) -> float:
    return float(np.mean([run["curve"][-1][lang] for lang in LANGS])) if "diverged_at" not in run else math.inf


def bench_preset(preset: str, args, train_tokens, val) -> dict:
    result = {}
    for opt in ("adamw", "muon"):
        sweep, todo = {}, sorted(args.lrs)
        while todo:
            lr = todo.pop(0)
            sweep[lr] = train_once(preset, opt, lr, args.seeds[0], args, train_tokens, val)
            run = sweep[lr]
            print(f"  {preset} {opt} lr {lr:g} seed {args.seeds[0]}: "
                  + (f"diverged at step {run['diverged_at']}" if "diverged_at" in run else "final val "
                     + ", ".join(f"{lang} {run['curve'][-1][lang]:.4f}" for lang in LANGS))
                  + f" ({run['step_s'] * 1000:.1f} ms/step)", flush=True)
            if not todo:  # the best rate at an end of the grid: go one factor of 2 further, at most twice
                best = min(sweep, key=lambda r: final_mean(sweep[r]))
                extra = len(sweep) - len(args.lrs)
                if extra < 2 and best == min(sweep):
                    todo = [best / 2]
                elif extra < 2 and best == max(sweep):
                    todo = [best * 2]
        best = min(sweep, key=lambda lr: final_mean(sweep[lr]))
        runs = [sweep[best]] + [train_once(preset, opt, best, s, args, train_tokens, val) for s in args.seeds[1:]]
        result[opt] = {"lr": best, "sweep": {str(k): final_mean(v) for k, v in sweep.items()},
                       "curve": mean_curve(runs), "step_s": float(np.median([r["step_s"] for r in runs])),
                       "finals": [{lang: r["curve"][-1][lang] for lang in LANGS} for r in runs]}
    for opt, sec in step_cost(preset, {opt: result[opt]["lr"] for opt in ("adamw", "muon")}, args,
                              train_tokens).items():
        result[opt]["step_s"] = sec  # alternating rounds; the runs above had AdamW's all before Muon's
    targets = {lang: result["adamw"]["curve"][-1][lang] for lang in LANGS}
    result["targets"] = targets
    result["steps_to_target"] = {opt: {lang: steps_to(result[opt]["curve"], lang, targets[lang]) for lang in LANGS}
                                 for opt in ("adamw", "muon")}
    return result


def print_table(results: dict, steps: int, seeds: list[int]) -> None:
    print(f"\n{steps} steps of {BATCH}x{BLOCK} tokens, seeds {seeds}; target = AdamW's final validation loss "
          "(seed mean); steps to reach it, and the share of AdamW's steps")
    print("| preset | optimizer | best lr | final val km | final val en | steps to target km | "
          "steps to target en | ms/step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for preset, r in results.items():
        for opt in ("adamw", "muon"):
            last = r[opt]["curve"][-1]
            cells = []
            for lang in LANGS:
                s = r["steps_to_target"][opt][lang]
                cells.append("not reached" if s is None else f"{s:.0f} ({s / steps:.2f})")
            print(f"| {preset} | {opt} | {r[opt]['lr']:g} | {last['km']:.4f} | {last['en']:.4f} | "
                  f"{cells[0]} | {cells[1]} | {r[opt]['step_s'] * 1000:.1f} |")
        print(f"| {preset} | Muon's step against AdamW's | | | | | | {r['muon']['step_s'] / r['adamw']['step_s']:.2f}x |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3, 8e-3], help="the sweep")
    ap.add_argument("--muon-momentum", type=float, default=0.95)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--eval-blocks", type=int, default=32, help="validation blocks of 128 tokens per language")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--work", default="/tmp/tonsai-bench-optim", help="cached data, tokenizer and tokens")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (the shared data sits beside the checkout)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    args.paths = prepare_data(Path(args.work))
    train_tokens = np.asarray(TokenFile(args.paths["train"]).tokens[:])
    val = {}
    for lang in LANGS:
        v = np.asarray(TokenFile(args.paths[f"val_{lang}"]).tokens[:])
        n = min(args.eval_blocks, len(v) // BLOCK)
        val[lang] = torch.from_numpy(v[:n * BLOCK].reshape(n, BLOCK).astype(np.int64))
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {len(train_tokens):,} training tokens, validation "
          + ", ".join(f"{lang} {len(x)} blocks" for lang, x in val.items()), flush=True)
    results = {p: bench_preset(p, args, train_tokens, val) for p in args.presets}
    print_table(results, args.steps, args.seeds)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
