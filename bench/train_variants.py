#!/usr/bin/env python
"""Helpers of bench_train_cpu.py and bench_train_gpu.py: the inputs made once (prepare, tokenizer,
token folders), then each training variant run as users run it, scripts/train_gpt2.py in its own
process (under torchrun for several processes), with its throughput read from metrics.jsonl and its
peak memory reported by each process.

Run as a script, this file is the per-process wrapper: it runs scripts/train_gpt2.py in this process
(runpy, the script unchanged) and, at exit, writes that process's peak RSS (and on a GPU its peak
allocated memory) to ``<--peak-file>.rank<RANK>.json``:

  python bench/train_variants.py --peak-file PATH -- <train_gpt2.py arguments>
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tonsai.train.launch import free_port

REPO = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO / "scripts/train_gpt2.py"
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def make_inputs(root: Path, khmer: list[str], english: list[str], vocab_size: int, target_chars: int = 0,
                max_epochs: float = 20, workers: int = 1) -> tuple[Path, Path, Path]:
    """(dataset, tokenizer, tokens) folders under ``root``: prepare, train_tokenizer and
    tokenize_dataset once, so that every variant trains on the same token folders (--tokens-dir); a
    stage whose folder is already complete (its manifest.json) is not run again."""
    from tonsai.data.prepare import PrepareConfig, run_prepare
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer
    from tonsai.tokenizer.pack import TokenizeConfig, run_tokenize

    data, tok, tokens = root / "data", root / "tok", root / "tokens"
    # datatrove logs every task to stderr, from worker processes too: kept aside (the file descriptor itself)
    # and shown only when a stage fails
    with tempfile.TemporaryFile("w+") as chatter:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(chatter.fileno(), 2)
        try:
            if not (data / "manifest.json").is_file():
                run_prepare(PrepareConfig(output_dir=str(data), khmer=khmer, english=english, max_epochs=max_epochs,
                                          target_chars=target_chars))
            if not (tok / "manifest.json").is_file():
                run_train_tokenizer(TokenizerConfig(output_dir=str(tok), dataset_dir=str(data),
                                                    vocab_size=vocab_size))
            if not (tokens / "manifest.json").is_file():
                run_tokenize(TokenizeConfig(dataset_dir=str(data), tokenizer_dir=str(tok), output_dir=str(tokens),
                                            workers=workers))
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if sys.exc_info()[0] is not None:
                chatter.seek(0)
                sys.stderr.write(chatter.read()[-20000:])
    return data, tok, tokens


@dataclasses.dataclass
class Result:
    name: str
    processes: int
    rates: list[float] = dataclasses.field(default_factory=list)  # tokens/s of each steady step, all processes
    peak_rss_gb: list[float] = dataclasses.field(default_factory=list)  # one per process
    peak_gpu_gb: float | None = None  # the processes' largest peak allocated GPU memory (whole run)
    wall_s: float = 0.0  # the whole process: start, setup, training, validation, export
    error: str | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Total tokens / total time of the steady steps."""
        return harmonic(self.rates) if self.rates else None

    @property
    def median_tokens_per_s(self) -> float | None:
        """The median step: robust to the stalls a shared machine's other load causes."""
        return statistics.median(self.rates) if self.rates else None


def steady(metrics: Path, skip: int) -> list[dict]:
    """The training logs after step ``skip`` (warm-up and compilation excluded)."""
    rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    return [r for r in rows if "tokens_per_s" in r and r["step"] > skip]


def harmonic(rates: list[float]) -> float:
    """Mean tokens/s over equal-token intervals: total tokens / total time."""
    return len(rates) / sum(1 / r for r in rates)


def run_process(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, str, str, float]:
    """(exit status or None when stopped at ``timeout``, stdout, stderr, seconds) of ``cmd`` run in the
    repository without a launcher's variables; in its own process group, so that a timeout ends its
    launcher, ranks and data workers together."""
    run_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    run_env.update(env or {})
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, time.perf_counter() - t
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err, time.perf_counter() - t
    except BaseException:  # Ctrl-C reaches this process only (the child has its own session): end the child too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise


def failure_reason(stderr: str, rc: int) -> str:
    """The line that says why a run failed: tonsai's ``error:`` line, else a Python exception's line
    (``torch.OutOfMemoryError: ...``), else the last line that is not a warning."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    reason = next((x for x in reversed(lines) if x.startswith("error:") or ": error:" in x), None)
    reason = reason or next((x for x in reversed(lines) if re.match(r"[\w.]+(Error|Exception): ", x)), None)
    lines = [x for x in lines if "Warning" not in x] or lines
    return (reason or (lines[-1] if lines else f"exit status {rc}"))[:300]


def run_variant(name: str, train_args: list[str], out_dir: Path, skip: int, processes: int = 1,
                env: dict | None = None, timeout: float = 1800, log_dir: Path | None = None) -> Result:
    """scripts/train_gpt2.py with ``train_args`` plus --output-dir, in a fresh process (``processes`` > 1:
    under torchrun). A failure is returned as the result's error (the last line of its stderr)."""
    res = Result(name, processes)
    peak_file = out_dir.parent / f".{out_dir.name}.peak"
    wrapper = [str(Path(__file__).resolve()), "--peak-file", str(peak_file), "--",
               *train_args, "--output-dir", str(out_dir)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(free_port()), *wrapper]
    else:
        cmd = [sys.executable, *wrapper]
    rc, _, stderr, res.wall_s = run_process(cmd, timeout, env)
    if log_dir is not None:
        (log_dir / f"{out_dir.name}.log").write_text(stderr)
    if rc is None:
        res.error = f"stopped after {timeout:.0f} s (time limit)"
        return res
    for f in sorted(peak_file.parent.glob(peak_file.name + ".rank*.json")):
        peak = json.loads(f.read_text())
        res.peak_rss_gb.append(peak["max_rss_gb"])
        if "max_gpu_allocated_gb" in peak:  # the whole process's, as the bare loop's row measures it
            res.peak_gpu_gb = max(res.peak_gpu_gb or 0.0, peak["max_gpu_allocated_gb"])
        f.unlink()
    if rc != 0:
        res.error = failure_reason(stderr, rc)
        return res
    rows = steady(out_dir / "metrics.jsonl", skip)
    if not rows:
        res.error = f"no training log after the {skip} warm-up steps: raise the steps"
        return res
    res.rates = [r["tokens_per_s"] for r in rows]
    return res


def _wrapper_main() -> int:
    """Run scripts/train_gpt2.py here; at exit write this process's peak memory."""
    import resource

    argv = sys.argv[1:]
    if len(argv) < 3 or argv[0] != "--peak-file" or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    peak_file, train_args = argv[1], argv[3:]
    sys.argv = [str(TRAIN_SCRIPT), *train_args]
    sys.path.insert(0, str(REPO))
    import runpy

    code = 0
    try:
        runpy.run_path(str(TRAIN_SCRIPT), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    finally:
        peak = {"max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}  # KiB on Linux
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            peak["max_gpu_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
        rank = os.environ.get("RANK", "0")
        Path(f"{peak_file}.rank{rank}.json").write_text(json.dumps(peak))
    return code


if __name__ == "__main__":
    sys.exit(_wrapper_main())
