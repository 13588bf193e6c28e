#!/usr/bin/env python
"""GPU training throughput and MFU of train_gpt2.py on the 0.5B GPT-2 at 2,048 context (issue
goal on one H100: >= 45% MFU, about 116k tokens/s at a 32k vocabulary with tonsai's FLOPs formula), under DeepSpeed
ZeRO-2 and bf16, on the shared data (or the sample corpus repeated). Figures come from the run's
metrics.jsonl after the warm-up steps (MFU with the FLOPs formula of tonsai/model/cost.py), and
against a bare PyTorch loop (bf16 autocast, fused AdamW, same model and blocks, one GPU, no
DeepSpeed) measured in the same run.

  uv run python bench/bench_train_gpu.py                      # on a GPU machine
  uv run python bench/bench_train_gpu.py --torch-compile --micro-batch-size 16
  uv run python bench/bench_train_gpu.py --model-config configs/model/gpt2_tiny.json \
      --block-size 128 --steps 8 --device cpu                   # smoke test of the script on a CPU
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-config", default=str(REPO / "configs/model/gpt2_500m.json"))
    ap.add_argument("--block-size", type=int, default=2048)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--deepspeed", default=str(REPO / "configs/deepspeed/zero2_h100.json"))
    ap.add_argument("--torch-compile", action="store_true")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--keep", type=Path, help="keep the run folder here instead of a temporary one")
    args = ap.parse_args()

    from tonsai.data.prepare import PrepareConfig, run_prepare
    from tonsai.model.cost import GPU_PEAK_BF16, gpu_key
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
    from tonsai.train.config import TrainConfig
    from tonsai.train.run import run_train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if (SHARED / "khmer_news_kh_data_1000").is_dir():
        km = [str(SHARED / "khmer_news_kh_data_1000/khm_news_orig.txt")]
        en = [str(SHARED / "english_wikitext2_raw/wikitext2.valid.txt"), str(SHARED / "english_tinyshakespeare/input.txt")]
    else:
        km, en = [str(REPO / "tonsai/sample_corpus/km.txt")], [str(REPO / "tonsai/sample_corpus/en.txt")]
    needed_blocks = args.steps * args.micro_batch_size
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        # enough training text for the steps (about 4 characters a token, twice over) and no more: the
        # sample corpus needs repeating for that, the shared data does not
        target = max(2_000_000, 8 * needed_blocks * args.block_size)
        run_prepare(PrepareConfig(output_dir=str(root / "data"), khmer=km, english=en, max_epochs=50,
                                  target_chars=target))
        run_train_tokenizer(TokenizerConfig(output_dir=str(root / "tok"), dataset_dir=str(root / "data"),
                                            vocab_size=args.vocab_size))
        manifest = run_train(TrainConfig(
            dataset_dir=str(root / "data"), tokenizer_dir=str(root / "tok"), model_config=args.model_config,
            output_dir=str(root / "run"), deepspeed=args.deepspeed if args.device != "cpu" else None,
            block_size=args.block_size, micro_batch_size=args.micro_batch_size, max_steps=args.steps,
            eval_steps=100 * args.steps, save_steps=100 * args.steps, logging_steps=1, warmup=0.1,
            torch_compile=args.torch_compile, gradient_checkpointing=args.gradient_checkpointing,
            device=args.device, dataloader_workers=2, report_to=["none"], tokenize_workers=4))
        rows = [json.loads(x) for x in (root / "run/metrics.jsonl").read_text().splitlines()]
        skip = max(3, args.steps // 4)
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_train_cpu import bare_loop

        on_gpu = torch.cuda.is_available() and args.device != "cpu"
        bare = bare_loop(root / "tok", root / "run/tokens/train", Path(args.model_config), args.block_size,
                         args.micro_batch_size, args.steps, skip, "cuda" if on_gpu else "cpu",
                         bf16=on_gpu and manifest["precision"] == "bf16")
    steady = [r for r in rows if "tokens_per_s" in r and r["step"] > skip]
    if not steady:
        print(f"not enough steps after the {skip} warm-up steps; raise --steps", file=sys.stderr)
        return 1
    rate = len(steady) / sum(1 / r["tokens_per_s"] for r in steady)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    peak = GPU_PEAK_BF16.get(gpu_key(device) or "")
    print(f"\ndevice {device}; model {Path(args.model_config).name} ({manifest['parameters']:,} parameters, vocabulary "
          f"{manifest['vocab_size']:,}), {args.block_size} context, micro-batch {args.micro_batch_size}, "
          f"{manifest['precision']}, {'ZeRO-2' if args.device != 'cpu' else 'no DeepSpeed'}"
          f"{', torch.compile' if args.torch_compile else ''}")
    print(f"steady tokens/s (steps {skip + 1}..{args.steps}): {rate:,.0f}")
    print(f"bare PyTorch loop, same run: {bare:,.0f} tokens/s; ratio tonsai / bare {rate / bare:.3f}")
    if peak:
        fpt = steady[-1].get("mfu", 0) and steady[-1]["mfu"] * peak / steady[-1]["tokens_per_s"]
        print(f"MFU: {rate * fpt / peak:.1%} of {peak / 1e12:.0f} TFLOP/s ({fpt / 1e9:.3f} GFLOP/token); "
              f"peak GPU memory {max(r.get('gpu_memory_gb', 0) for r in steady):.1f} GB")
    print(f"({needed_blocks} blocks of {args.block_size} tokens trained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
