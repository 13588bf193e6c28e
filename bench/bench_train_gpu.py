#!/usr/bin/env python
"""GPU training throughput, MFU and peak memory of train_gpt2.py for every choice a user makes for the
0.5B preset at 2,048 context, in one command meant to finish in under 8 minutes on one H100 (issue
goal on one H100: >= 45% MFU, about 116k tokens/s at a 32k vocabulary with tonsai's FLOPs formula).

Each row is scripts/train_gpt2.py run as users run it, in its own process (so each has its own peak
memory), on the same token folders (the shared data, or the sample corpus repeated), one GPU:

  GPT-2 0.5B (configs/model/gpt2_500m.json)     bare bf16 loop (the baseline); plain and ZeRO-2, eager,
                                                AdamW; plain, Muon (Muon is refused under --deepspeed);
                                                plain and ZeRO-2 with --torch-compile
  Llama 0.48B (configs/model/llama_480m.json)   bare bf16 loop; plain, eager, AdamW, without and with
                                                --liger-kernel (Liger has no GPT-2 kernels: tonsai refuses it)

Tokens/s are the steps after the warm-up (compilation included in the warm-up); MFU uses the FLOPs
per token of tonsai/model/cost.py against the GPU's dense bf16 peak; peak memory is the process's
peak allocated GPU memory; each ratio is to the bare bf16 PyTorch loop (autocast, fused AdamW, same
model and blocks, no Trainer, no DeepSpeed) of the same architecture, measured in the same run. A row
that fails prints its reason and the others still run. Rows start in the order above (compile last);
one that would start after --time-budget seconds is skipped, and one still running then is stopped.

  uv run python bench/bench_train_gpu.py                        # every row, on one GPU
  uv run python bench/bench_train_gpu.py --variants bare,plain,zero2 --steps 60
  uv run python bench/bench_train_gpu.py --smoke [--skip-compile]   # tiny models on the CPU: every row
                                                                    # (Liger's reports its refusal)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_variants import failure_reason, make_inputs, run_process, run_variant  # noqa: E402

# key: (label, architecture, train_gpt2.py flags, or None for the bare loop); the rows run in this order
VARIANTS = {
    "bare": ("bare loop", "gpt2", None),
    "plain": ("plain, eager, AdamW", "gpt2", []),
    "zero2": ("ZeRO-2, eager, AdamW", "gpt2", ["--deepspeed", "{deepspeed}"]),
    "muon": ("plain, eager, Muon", "gpt2", ["--optimizer", "muon"]),
    "llama-bare": ("bare loop", "llama", None),
    "llama": ("plain, eager, AdamW", "llama", []),
    "llama-liger": ("plain, eager, AdamW, Liger", "llama", ["--liger-kernel"]),
    "compile": ("plain, compile, AdamW", "gpt2", ["--torch-compile"]),
    "zero2-compile": ("ZeRO-2, compile, AdamW", "gpt2", ["--deepspeed", "{deepspeed}", "--torch-compile"]),
}
COMPILED = {"compile", "zero2-compile"}


def bare_main(spec: str) -> int:
    """Hidden entry (--bare JSON): the bare loop in this fresh process; prints one JSON result line."""
    import resource

    import torch

    from bench_train_cpu import bare_loop

    a = json.loads(spec)
    stats: dict = {}
    rate = bare_loop(Path(a["tok"]), Path(a["tokens"]), Path(a["model"]), a["block"], a["batch"], a["steps"],
                     a["skip"], a["device"], bf16=a["bf16"], stats=stats,
                     gradient_checkpointing=a.get("gradient_checkpointing", False))
    stats.update(tokens_per_s=rate, max_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                 device=torch.cuda.get_device_name() if a["device"] == "cuda" else "cpu")
    print("BARE " + json.dumps(stats))
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        return bare_main(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="CPU smoke run: --device cpu, the tiny GPT-2 and Llama, block 128, 12 steps, vocabulary 1024")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated rows to run (default all): {', '.join(VARIANTS)}")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the --torch-compile rows")
    ap.add_argument("--model-config", help="GPT-2 rows (default configs/model/gpt2_500m.json; --smoke: gpt2_tiny)")
    ap.add_argument("--llama-config", help="Llama rows (default configs/model/llama_480m.json; --smoke: llama_tiny)")
    ap.add_argument("--block-size", type=int, help="default 2048 (--smoke: 128)")
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, help="steps a row (default 40, of which the first 10 are warm-up; --smoke 12)")
    ap.add_argument("--warmup-steps", type=int, help="steps left out of the figures (default a quarter of --steps)")
    ap.add_argument("--vocab-size", type=int, help="tokenizer vocabulary (default 32000; --smoke: 1024)")
    ap.add_argument("--deepspeed", default=str(REPO / "configs/deepspeed/zero2_h100.json"))
    ap.add_argument("--gradient-checkpointing", action="store_true", help="in every training row")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--time-budget", type=float,
                    help="seconds for the whole command, preparation included (default 450; --smoke: none)")
    ap.add_argument("--keep", type=Path, help="keep the run folders (and each row's log) here")
    args = ap.parse_args()

    import logging

    import torch

    smoke = args.smoke
    if smoke:
        args.device = "cpu"
    tiny = smoke or args.device == "cpu"
    presets = REPO / "configs/model"
    gpt2 = args.model_config or str(presets / ("gpt2_tiny.json" if tiny else "gpt2_500m.json"))
    llama = args.llama_config or str(presets / ("llama_tiny.json" if tiny else "llama_480m.json"))
    block = args.block_size or (128 if tiny else 2048)
    steps = args.steps or (12 if smoke else 40)
    skip = args.warmup_steps if args.warmup_steps is not None else max(3, steps // 4)
    vocab = args.vocab_size or (1024 if tiny else 32000)
    budget = args.time_budget if args.time_budget is not None else (None if smoke else 450.0)
    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    if not on_gpu and not tiny:
        ap.error("torch sees no GPU: run the tiny models on the CPU with --smoke (or --device cpu)")
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = set(keys) - set(VARIANTS)
    if unknown:
        ap.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.skip_compile:
        keys = [k for k in keys if k not in COMPILED]
    keys = [k for k in VARIANTS if k in keys]  # the fixed order: compile last
    models = {"gpt2": gpt2, "llama": llama}
    logging.disable(logging.INFO)

    t0 = time.perf_counter()
    if (SHARED / "khmer_news_kh_data_1000").is_dir():
        km = [str(SHARED / "khmer_news_kh_data_1000/khm_news_orig.txt")]
        en = [str(SHARED / "english_wikitext2_raw/wikitext2.valid.txt"),
              str(SHARED / "english_tinyshakespeare/input.txt")]
    else:
        km, en = [str(REPO / "tonsai/sample_corpus/km.txt")], [str(REPO / "tonsai/sample_corpus/en.txt")]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        # enough training text for the steps (about 4 characters a token, twice over) and no more
        target = max(2_000_000, 8 * steps * args.micro_batch_size * block)
        data, tok, tokens = make_inputs(root, km, en, vocab, target_chars=target, max_epochs=50,
                                        workers=min(4, os.cpu_count() or 1))
        prep_s = time.perf_counter() - t0
        print(f"inputs ready in {prep_s:.0f} s (prepare, tokenizer of {vocab:,}, token folders)", flush=True)
        fpt = _flops_per_token(models, tok, block)
        precision = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"  # train_gpt2.py's auto
        common = ["--dataset-dir", str(data), "--tokenizer-dir", str(tok), "--tokens-dir", str(tokens),
                  "--block-size", str(block), "--micro-batch-size", str(args.micro_batch_size),
                  "--max-steps", str(steps), "--eval-steps", str(100 * steps), "--save-steps", str(100 * steps),
                  "--logging-steps", "1", "--warmup", "0.1", "--eval-max-tokens", str(4 * block),
                  "--device", args.device, "--dataloader-workers", "2" if on_gpu else "0", "--report-to", "none"]
        if args.gradient_checkpointing:
            common.append("--gradient-checkpointing")
        # on a CPU one thread a process unless OMP_NUM_THREADS says otherwise: on a shared 2-core machine
        # torch's two threads stall whenever another job holds a core (bench_train_cpu.py --compare-deepspeed)
        env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")} if not on_gpu else None
        for key in keys:
            label, arch, flags = VARIANTS[key]
            left = None if budget is None else budget - (time.perf_counter() - t0)
            if left is not None and left < 15:
                rows[key] = {"error": f"not run: the time budget ({budget:.0f} s) is spent"}
                print(f"{key}: {rows[key]['error']}", flush=True)
                continue
            timeout = left if left is not None else 3600
            if flags is None:
                rows[key] = _bare(tok, tokens / "train", models[arch], block, args.micro_batch_size, steps, skip,
                                  "cuda" if on_gpu else "cpu", precision == "bf16", timeout, env,
                                  args.gradient_checkpointing)
            else:
                flags = [f.format(deepspeed=args.deepspeed) for f in flags]
                res = run_variant(key, common + ["--model-config", models[arch], *flags], root / key, skip,
                                  env=env, timeout=timeout, log_dir=root if args.keep else None)
                rows[key] = {"tokens_per_s": res.tokens_per_s, "error": res.error, "wall_s": res.wall_s,
                             "peak_gb": res.peak_gpu_gb if on_gpu else max(res.peak_rss_gb, default=None)}
                if not args.keep:  # its final/ model (2 GB at 0.5B) is not needed
                    shutil.rmtree(root / key, ignore_errors=True)
            r = rows[key]
            print(f"{key}: " + (r["error"] if r.get("error") else f"{r['tokens_per_s']:,.0f} tokens/s")
                  + f"  [{r.get('wall_s', 0):.0f} s; {time.perf_counter() - t0:.0f} s since the start]", flush=True)
    elapsed = time.perf_counter() - t0
    device = next((r["device"] for r in rows.values() if r.get("device")),
                  torch.cuda.get_device_name() if on_gpu else "cpu")
    if not on_gpu:
        device += f" ({env['OMP_NUM_THREADS']} thread(s) a process)"
    _table(rows, keys, models, fpt, device, on_gpu, precision, block, steps, skip, args.micro_batch_size, elapsed)
    return 0


def _flops_per_token(models: dict[str, str], tok: Path, block: int) -> dict[str, float]:
    """tonsai/model/cost.py's FLOPs per trained token of each architecture at this block and vocabulary."""
    from transformers import AutoTokenizer

    from tonsai.model.build import load_model_config
    from tonsai.model.cost import ModelShape

    tokenizer = AutoTokenizer.from_pretrained(tok)
    return {arch: ModelShape.from_config(load_model_config(path, tokenizer), block).flops_per_token()
            for arch, path in models.items()}


def _bare(tok: Path, tokens: Path, model: str, block: int, batch: int, steps: int, skip: int, device: str,
          bf16: bool, timeout: float, env: dict | None, gradient_checkpointing: bool = False) -> dict:
    spec = json.dumps(dict(tok=str(tok), tokens=str(tokens), model=model, block=block, batch=batch, steps=steps,
                           skip=skip, device=device, bf16=bf16, gradient_checkpointing=gradient_checkpointing))
    rc, out, err, wall = run_process([sys.executable, str(Path(__file__).resolve()), "--bare", spec], timeout, env)
    if rc is None:
        return {"error": f"stopped after {timeout:.0f} s (time limit)", "wall_s": wall}
    if rc != 0:
        return {"error": failure_reason(err, rc), "wall_s": wall}
    line = next((x for x in out.splitlines() if x.startswith("BARE ")), None)
    if line is None:
        return {"error": "the bare loop printed no result", "wall_s": wall}
    got = json.loads(line[5:])
    return {"tokens_per_s": got["tokens_per_s"], "peak_gb": got.get("peak_gpu_gb", got["max_rss_gb"]),
            "device": got["device"], "wall_s": wall}


def _table(rows, keys, models, fpt, device, on_gpu, precision, block, steps, skip, batch, elapsed) -> None:
    from tonsai.model.cost import GPU_PEAK_BF16, gpu_key, mfu

    peak = GPU_PEAK_BF16.get(gpu_key(device) or "") if on_gpu else None
    names = {arch: Path(path).stem for arch, path in models.items()}
    print(f"\ndevice {device}; {precision}; context {block}, micro-batch {batch}, one process; {steps} steps a row "
          f"(first {skip} left out: warm-up, compilation); "
          + (f"MFU against {peak / 1e12:.0f} TFLOP/s; " if peak else "no MFU on this device; ")
          + f"memory: {'peak allocated GPU memory' if on_gpu else 'peak RSS'}; {elapsed:.0f} s in all")
    head = f"{'row':<14} {'model':<11} {'variant':<27} {'tokens/s':>10} {'MFU':>6} {'memory':>9} {'ratio':>7}  note"
    print(head)
    print("-" * len(head))
    for key in keys:
        label, arch, _ = VARIANTS[key]
        r = rows.get(key, {})
        model = names[arch]
        if r.get("error") or not r.get("tokens_per_s"):
            print(f"{key:<14} {model:<11} {label:<27} {'-':>10} {'-':>6} {'-':>9} {'-':>7}  "
                  f"{r.get('error', 'not run')}")
            continue
        rate = r["tokens_per_s"]
        util = f"{mfu(rate, fpt[arch], peak):.1%}" if peak else "-"
        mem = f"{r['peak_gb']:.1f} GB" if r.get("peak_gb") else "-"
        base = rows.get("bare" if arch == "gpt2" else "llama-bare", {}).get("tokens_per_s")
        ratio = "1.000" if key.endswith("bare") else (f"{rate / base:.3f}" if base else "-")
        note = ""
        if key.endswith("bare"):
            note = (f"{'bf16 autocast' if precision == 'bf16' else 'fp32'}, fused AdamW, no Trainer: the baseline "
                    f"of the {model} rows")
        elif key == "llama-liger" and rows.get("llama", {}).get("tokens_per_s"):
            note = f"{rate / rows['llama']['tokens_per_s']:.3f}x the Llama row without Liger"
        elif key == "muon":
            note = "plain path: Muon is refused under --deepspeed"
        print(f"{key:<14} {model:<11} {label:<27} {rate:>10,.0f} {util:>6} {mem:>9} {ratio:>7}  {note}")
    print("ratio: tokens/s over the bare loop of the same model in this run; Liger rows use the Llama preset "
          "because Liger has no GPT-2 kernels; FLOPs per token (tonsai/model/cost.py): "
          + ", ".join(f"{names[a]} {v / 1e9:.3f} G" for a, v in fpt.items()))


if __name__ == "__main__":
    sys.exit(main())
