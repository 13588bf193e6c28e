#!/usr/bin/env python
"""CPU training throughput of tonsai's training stage (HF Trainer, the code train_gpt2.py runs)
against a bare PyTorch loop over the same model, the same packed blocks and the same optimizer
settings, measured in the same run. Both exclude the first steps (warm-up) from the figure.

  uv run python bench/bench_train_cpu.py [--steps 60] [--block-size 128] [--micro-batch-size 8]

--compare-deepspeed instead runs scripts/train_gpt2.py itself, each variant in its own process as users
run it: the plain path and DeepSpeed ZeRO-2 (configs/deepspeed/zero2_h100.json, gloo on CPU), each in
one process (no launcher) and in two (torchrun), one thread a process (--with-default-threads adds one
process with torch's default threads), on the same token folders, --rounds times in alternating order;
it prints tokens/s (the median step, and total tokens / total time), the ratio to the plain
one-process run, and each process's peak RSS (about 3 minutes on 2 cores):

  TORCH_EXTENSIONS_DIR=$HOME/.cache/torch_extensions uv run python bench/bench_train_cpu.py --compare-deepspeed
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ZERO2 = REPO / "configs/deepspeed/zero2_h100.json"


def bare_loop(tok_dir: Path, token_dir: Path, model_config: Path, block: int, batch: int, steps: int,
              skip: int, device: str = "cpu", bf16: bool = False, stats: dict | None = None,
              gradient_checkpointing: bool = False) -> float:
    """Tokens/s of a plain PyTorch training loop (bf16 autocast on a GPU when ``bf16``, activation
    recomputation when ``gradient_checkpointing``, as the stage's flag); also the baseline of
    bench_train_gpu.py. On a GPU ``stats`` (when given) gets ``peak_gpu_gb``, the
    process's peak allocated memory (as the training stage's metrics.jsonl reports it)."""
    import contextlib

    import torch
    from transformers import AutoTokenizer

    from tonsai.model.build import build_model, load_model_config
    from tonsai.tokenizer.pack import PackedBlocks, TokenFile

    torch.manual_seed(0)
    model = build_model(load_model_config(model_config, AutoTokenizer.from_pretrained(tok_dir))).to(device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    data = PackedBlocks(TokenFile(token_dir).tokens, block)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    done, t0 = 0, None
    while done < steps:
        for b in loader:
            if done == skip:
                sync()
                t0 = time.perf_counter()
            ids = b["input_ids"].to(device, non_blocking=True)
            with autocast():
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    sync()
    rate = (steps - skip) * batch * block / (time.perf_counter() - t0)
    if stats is not None and device.startswith("cuda"):
        stats["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help="training steps a run (default 60; 40 with --compare-deepspeed)")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--model-config", type=Path, default=REPO / "configs/model/gpt2_tiny.json")
    ap.add_argument("--compare-deepspeed", action="store_true",
                    help="plain against ZeRO-2, in 1 and 2 processes (scripts/train_gpt2.py in subprocesses)")
    ap.add_argument("--rounds", type=int, default=3, help="with --compare-deepspeed: runs of each variant")
    ap.add_argument("--with-default-threads", action="store_true",
                    help="with --compare-deepspeed: also one process with torch's default threads (one a core); on "
                         "a shared machine these stall whenever another job holds a core, and take minutes")
    ap.add_argument("--deepspeed", type=Path, default=ZERO2, help="with --compare-deepspeed: the ZeRO-2 JSON")
    args = ap.parse_args()
    if args.compare_deepspeed:
        args.steps = args.steps or 40
        return compare_deepspeed(args)
    args.steps = args.steps or 60
    import logging

    import torch

    from tonsai.data.prepare import PrepareConfig, run_prepare
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
    from tonsai.train.config import TrainConfig
    from tonsai.train.run import run_train

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_variants import harmonic, steady

    logging.disable(logging.INFO)
    sample = REPO / "tonsai/sample_corpus"
    skip = max(2, args.steps // 6)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_prepare(PrepareConfig(output_dir=str(tmp / "data"), khmer=[str(sample / "km.txt")],
                                  english=[str(sample / "en.txt")], max_epochs=20))
        run_train_tokenizer(TokenizerConfig(output_dir=str(tmp / "tok"), dataset_dir=str(tmp / "data"),
                                            vocab_size=1024))
        t = time.perf_counter()
        run_train(TrainConfig(
            dataset_dir=str(tmp / "data"), tokenizer_dir=str(tmp / "tok"), model_config=str(args.model_config),
            output_dir=str(tmp / "run"), block_size=args.block_size, micro_batch_size=args.micro_batch_size,
            max_steps=args.steps, eval_steps=10 * args.steps, save_steps=args.steps, logging_steps=1,
            learning_rate=6e-4, warmup=0, dataloader_workers=0, device="cpu"))
        wall = time.perf_counter() - t
        # tokens/s between consecutive train logs after the warm-up steps (evaluation excluded), as total
        # tokens over total time
        tonsai_rate = harmonic([r["tokens_per_s"] for r in steady(tmp / "run/metrics.jsonl", skip)])
        bare_rate = bare_loop(tmp / "tok", tmp / "run/tokens/train", args.model_config, args.block_size,
                              args.micro_batch_size, args.steps, skip)
    print(f"model {args.model_config.name}, block {args.block_size}, micro-batch {args.micro_batch_size}, "
          f"{args.steps} steps (first {skip} excluded), {torch.get_num_threads()} torch threads")
    print(f"tonsai train stage (HF Trainer)  {tonsai_rate:>10,.0f} tokens/s   (whole stage incl. setup: {wall:.1f} s)")
    print(f"bare PyTorch loop                {bare_rate:>10,.0f} tokens/s")
    print(f"ratio tonsai / bare              {tonsai_rate / bare_rate:>10.3f}")
    return 0


def compare_deepspeed(args) -> int:
    """Plain against ZeRO-2, one and two processes, alternating; one table."""
    import logging
    import os
    import statistics

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_variants import harmonic, make_inputs, run_variant

    logging.disable(logging.INFO)
    sample = REPO / "tonsai/sample_corpus"
    skip = max(2, args.steps // 5)
    default_threads = os.environ.get("OMP_NUM_THREADS") or str(torch.get_num_threads())
    ds = ["--deepspeed", str(args.deepspeed)]
    # (name, extra train_gpt2.py flags, processes, OMP_NUM_THREADS per process: None leaves torch's default)
    variants = [("plain", [], 1, "1"), ("ZeRO-2", ds, 1, "1"), ("plain", [], 2, "1"), ("ZeRO-2", ds, 2, "1")]
    if args.with_default_threads:
        variants[2:2] = [("plain", [], 1, None), ("ZeRO-2", ds, 1, None)]
    results: dict[tuple, list] = {v[0:1] + v[2:]: [] for v in variants}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, tok, tokens = make_inputs(tmp, [str(sample / "km.txt")], [str(sample / "en.txt")], 1024)
        common = ["--dataset-dir", str(data), "--tokenizer-dir", str(tok), "--tokens-dir", str(tokens),
                  "--model-config", str(args.model_config), "--block-size", str(args.block_size),
                  "--micro-batch-size", str(args.micro_batch_size), "--max-steps", str(args.steps),
                  "--eval-steps", str(10 * args.steps), "--save-steps", str(10 * args.steps), "--logging-steps", "1",
                  "--warmup", "0", "--learning-rate", "6e-4", "--dataloader-workers", "0", "--device", "cpu",
                  "--report-to", "none", "--eval-max-tokens", "4096"]
        for r in range(args.rounds):
            for name, extra, n, threads in (variants if r % 2 == 0 else variants[::-1]):
                out = tmp / f"{name.replace('-', '').lower()}_{n}p_{threads or 'default'}t_round{r}"
                res = run_variant(name, common + extra, out, skip, processes=n,
                                  env={"OMP_NUM_THREADS": threads} if threads else None)
                results[name, n, threads].append(res)
                what = res.error or (f"{res.median_tokens_per_s:,.0f} tokens/s (median step), "
                                     f"{res.tokens_per_s:,.0f} (total/time)")
                print(f"round {r + 1}: {name:<7} {n} process{'es' if n > 1 else '  '} x {threads or default_threads} "
                      f"thread(s)  {what}  [{res.wall_s:.0f} s with start-up and export]", flush=True)
    elapsed = time.perf_counter() - t0
    load_after = os.getloadavg()

    def pooled(key):
        runs = results[key]
        rates = [x for res in runs for x in res.rates]
        errors = [res.error for res in runs if res.error]
        rss = max((g for res in runs for g in res.peak_rss_gb), default=None)
        return (statistics.median(rates) if rates else None, harmonic(rates) if rates else None, rss, errors)

    base = pooled(("plain", 1, "1"))
    print(f"\nmodel {args.model_config.name}, block {args.block_size}, micro-batch {args.micro_batch_size} per "
          f"process, fp32, {args.steps} steps a run (first {skip} excluded), {args.rounds} rounds in alternating "
          f"order, {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
          f"(other users' jobs); {elapsed:.0f} s in all")
    print(f"{'variant':<8} {'processes':>9} {'threads':>11} {'tokens/s':>10} {'ratio':>7} {'total/time':>11} "
          f"{'ratio':>7} {'peak RSS/process':>17}")
    for name, _, n, threads in variants:
        med, tot, rss, errors = pooled((name, n, threads))
        label = threads or f"{default_threads} (default)"
        if med is None:
            print(f"{name:<8} {n:>9} {label:>11}  failed: {errors[0] if errors else 'no result'}")
            continue
        ratio = f"{med / base[0]:.3f}" if base[0] else "-"
        ratio_tot = f"{tot / base[1]:.3f}" if base[1] else "-"
        print(f"{name:<8} {n:>9} {label:>11} {med:>10,.0f} {ratio:>7} {tot:>11,.0f} {ratio_tot:>7} {rss:>14.2f} GB"
              + (f"  ({len(errors)} run(s) failed: {errors[0]})" if errors else ""))
    print("tokens/s: the median step over all rounds, counting every process's tokens (2 processes train 2 "
          "micro-batches a step); total/time: all steady steps' tokens over their time; ratio: to plain, 1 process, "
          "1 thread; threads: OMP_NUM_THREADS per process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
