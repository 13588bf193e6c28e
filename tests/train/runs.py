"""Helpers shared by the training tests (plain functions; the shared fixtures are in conftest.py): the
tiny run's config and command line, scripts/train_gpt2.py run as users run it (in a subprocess, without a
launcher's variables), kill -9 at a chosen moment, and reading a run's metrics.jsonl."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tonsai.train.config import TrainConfig

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TINY = str(REPO / "configs/model/gpt2_tiny.json")
ZERO2 = str(REPO / "configs/deepspeed/zero2_h100.json")


def common_args(pipe, out, steps=12):
    return ["--dataset-dir", str(pipe / "data"), "--tokenizer-dir", str(pipe / "tok"), "--model-config", TINY,
            "--output-dir", str(out), "--block-size", "64", "--micro-batch-size", "4", "--max-steps", str(steps),
            "--eval-steps", "6", "--save-steps", "6", "--logging-steps", "2", "--dataloader-workers", "0",
            "--device", "cpu"]


def run_script(args, launcher=None, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    cmd = (launcher or [sys.executable]) + [str(REPO / "scripts/train_gpt2.py"), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def losses(run_dir, key="loss"):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


def rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def config(pipe, out, steps=12, **kw):
    args = dict(dataset_dir=str(pipe / "data"), tokenizer_dir=str(pipe / "tok"), model_config=TINY,
                output_dir=str(out), block_size=64, micro_batch_size=4, max_steps=steps, eval_steps=6,
                save_steps=6, logging_steps=2, dataloader_workers=0, device="cpu")
    return TrainConfig(**{**args, **kw})


def wait_and_kill(proc, condition, timeout=600):
    import signal
    import time

    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "training ended before the kill point"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
