#!/usr/bin/env python
"""CPU training throughput of tonsai's training stage (HF Trainer, the code train_gpt2.py runs)
against a bare PyTorch loop over the same model, the same packed blocks and the same optimizer
settings, measured in the same run. Both exclude the first steps (warm-up) from the figure.

  uv run python bench/bench_train_cpu.py [--steps 60] [--block-size 128] [--micro-batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bare_loop(tok_dir: Path, token_dir: Path, model_config: Path, block: int, batch: int, steps: int,
              skip: int, device: str = "cpu", bf16: bool = False) -> float:
    """Tokens/s of a plain PyTorch training loop (bf16 autocast on a GPU when ``bf16``); also the
    baseline of bench_train_gpu.py."""
    import contextlib

    import torch
    from transformers import AutoTokenizer

    from tonsai.model.build import build_model, load_model_config
    from tonsai.tokenizer.pack import PackedBlocks, TokenFile

    torch.manual_seed(0)
    model = build_model(load_model_config(model_config, AutoTokenizer.from_pretrained(tok_dir))).to(device)
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
    return (steps - skip) * batch * block / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--model-config", type=Path, default=REPO / "configs/model/gpt2_tiny.json")
    args = ap.parse_args()
    import logging

    import torch

    from tonsai.data.prepare import PrepareConfig, run_prepare
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
    from tonsai.train.config import TrainConfig
    from tonsai.train.run import run_train

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
        rows = [json.loads(x) for x in (tmp / "run/metrics.jsonl").read_text().splitlines()]
        # tokens/s between consecutive train logs after the warm-up steps (evaluation excluded)
        steady = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > skip]
        tonsai_rate = len(steady) / sum(1 / r for r in steady)  # harmonic mean = total tokens / total time
        bare_rate = bare_loop(tmp / "tok", tmp / "run/tokens/train", args.model_config, args.block_size,
                              args.micro_batch_size, args.steps, skip)
    print(f"model {args.model_config.name}, block {args.block_size}, micro-batch {args.micro_batch_size}, "
          f"{args.steps} steps (first {skip} excluded), {torch.get_num_threads()} torch threads")
    print(f"tonsai train stage (HF Trainer)  {tonsai_rate:>10,.0f} tokens/s   (whole stage incl. setup: {wall:.1f} s)")
    print(f"bare PyTorch loop                {bare_rate:>10,.0f} tokens/s")
    print(f"ratio tonsai / bare              {tonsai_rate / bare_rate:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
