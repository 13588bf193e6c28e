"""tokenize_dataset.py on datatrove's executors: local tasks (1 or 3 give the same tokens), a kill -9
in the middle then a rerun that skips finished tasks, and Slurm through the stand-in scheduler of
tests/data/slurm_standin (the job scripts run for real). Token streams are checked against the
tokenizer applied to the dataset's texts directly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.data.slurm_jobs import pipeline_jobs
from tonsai.cli import parse_config
from tonsai.data.prepared import load_splits
from tonsai.tokenizer.pack import TokenFile, TokenizeConfig, run_tokenize

REPO = Path(__file__).resolve().parent.parent.parent
SCRIPT = str(REPO / "scripts" / "tokenize_dataset.py")
STANDIN = REPO / "tests" / "data" / "slurm_standin"
TOTALS = ("tokens", "documents", "bytes", "characters", "by_lang", "dtype", "eos_id", "tokenizer_sha256")


def expected_stream(dataset_dir, tok_dir, split="train", lang=None) -> list[int]:
    """The split's documents (of ``lang``) through the tokenizer, each followed by end-of-text."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    ds = load_splits(Path(dataset_dir) / "dataset")[split]
    out = []
    for text, doc_lang in zip(ds["text"], ds["lang"]):
        if lang is None or doc_lang == lang:
            out += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return out


def shard_bytes(folder: Path) -> bytes:
    meta = json.loads((folder / "meta.json").read_text())
    return b"".join((folder / s["file"]).read_bytes() for s in meta["shards"])


def token_langs(tf: TokenFile) -> list[str] | None:
    """The language of every token (runs may be cut at shard boundaries: compare tokens, not runs)."""
    if tf.lang_runs is None:
        return None
    ends = tf.lang_runs[:, 0]
    return [tf.langs[i] for i in np.repeat(tf.lang_runs[:, 1], np.diff(ends, prepend=0))]


def script(args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **kw.pop("env", {}))
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, **kw)


def test_one_and_three_tasks_give_byte_identical_tokens_and_the_same_totals(sample_pipeline, tmp_path):
    data, tok = str(sample_pipeline / "data"), str(sample_pipeline / "tok")
    common = ["--dataset-dir", data, "--tokenizer-dir", tok]
    one = run_tokenize(parse_config(TokenizeConfig, "", common + ["--output-dir", str(tmp_path / "one"),
                                                                  "--workers", "1"]))
    three = run_tokenize(parse_config(TokenizeConfig, "", common + ["--output-dir", str(tmp_path / "three"),
                                                                    "--num-shards", "3", "--num-proc", "2"]))
    assert sorted(one) == sorted(three) == ["train", "validation_en", "validation_km"]
    for name in one:
        a, b = TokenFile(one[name]), TokenFile(three[name])
        assert shard_bytes(one[name]) == shard_bytes(three[name])
        assert {k: a.meta.get(k) for k in TOTALS} == {k: b.meta.get(k) for k in TOTALS}
        assert token_langs(a) == token_langs(b)
    assert [len(TokenFile(three["train"]).meta["shards"]), len(TokenFile(one["train"]).meta["shards"])] == [3, 1]
    want = expected_stream(data, tok)
    assert np.asarray(TokenFile(three["train"]).tokens).tolist() == want
    assert not (tmp_path / "three" / ".work").exists()  # the tasks' files are gone once the folders are written
    stats = json.loads((tmp_path / "one" / "manifest.json").read_text())["folders"]["train"]
    assert stats["tokens"] == len(want)


@pytest.fixture(scope="module")
def big_data(sample_pipeline, tmp_path_factory):
    """The sample dataset's train split 150 times over (a few seconds of tokenizing), same manifest."""
    import shutil

    import datasets

    out = tmp_path_factory.mktemp("big") / "data"
    dd = load_splits(sample_pipeline / "data" / "dataset")
    big = datasets.DatasetDict({"train": datasets.concatenate_datasets([dd["train"]] * 150),
                                "validation": dd["validation"]})
    big.save_to_disk(str(out / "dataset"))
    shutil.copy(sample_pipeline / "data" / "manifest.json", out / "manifest.json")
    return out


def test_kill_9_mid_way_then_rerun_skips_finished_tasks_and_gives_the_same_tokens(big_data, sample_pipeline,
                                                                                     tmp_path):
    tok = str(sample_pipeline / "tok")
    out = tmp_path / "tokens"
    args = ["--dataset-dir", str(big_data), "--tokenizer-dir", tok, "--output-dir", str(out), "--tasks", "8",
            "--workers", "1"]
    done = out / ".work" / "logs" / "completions"
    proc = subprocess.Popen([sys.executable, SCRIPT, *args], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.monotonic() + 300
    while not (done.is_dir() and any(done.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(int(p.name) for p in done.iterdir())
    assert 1 <= len(finished) < 10 and not (out / "manifest.json").exists()  # 8 train + 2 validation tasks
    shards = out / ".work" / "shards" / "train"
    before = {r: (shards / f"shard-{r:05d}.bin").stat().st_mtime_ns for r in finished}
    r = script(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{len(finished)} of 10 tokenize tasks are finished already" in r.stderr
    # the finished tasks' shards were kept, not rewritten (the folder's files are links to them)
    assert {r: (out / "train" / f"shard-{r:05d}.bin").stat().st_mtime_ns for r in finished} == before
    tf = TokenFile(out / "train")
    assert len(tf.meta["shards"]) == 8
    assert np.asarray(tf.tokens).tolist() == expected_stream(sample_pipeline / "data", tok) * 150
    km = TokenFile(out / "validation_km")
    assert np.asarray(km.tokens).tolist() == expected_stream(big_data, tok, "validation", "km")


def test_slurm_executor_submits_tasks_and_a_final_job_that_build_the_same_token_folders(sample_pipeline, tmp_path):
    data, tok = str(sample_pipeline / "data"), str(sample_pipeline / "tok")
    state = tmp_path / "slurm"
    env = {"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "SLURM_STANDIN_DIR": str(state)}
    r = script(["--dataset-dir", data, "--tokenizer-dir", tok, "--output-dir", "tokens", "--executor", "slurm",
                "--slurm-partition", "cpu", "--slurm-time", "1:00:00", "--tasks", "3", "--workers", "2",
                "--slurm-sbatch", "account=khmer-nlp"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = [json.loads(line) for line in (state / "jobs.jsonl").read_text().splitlines()]
    tasks = next(j for j in jobs if j["directives"].get("job-name") == "tonsai-tokenize")
    final = next(j for j in jobs if j["directives"].get("job-name") == "tonsai-tokenize-finish")
    d = tasks["directives"]
    assert (d["partition"], d["time"], d["array"], d["account"]) == ("cpu", "1:00:00", "0-4%2", "khmer-nlp")
    assert f"--dependency=afterok:{tasks['id']}" in final["args"]  # the final job waits for every task
    assert tasks["exit_codes"] == [0] * 5 and final["exit_codes"] == [0]
    assert f"tokenize tasks job {tasks['id']}, final job {final['id']}" in r.stderr
    out = tmp_path / "tokens"
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["folders"]) == ["train", "validation_en", "validation_km"]
    assert len(manifest["folders"]["train"]["shards"]) == 3
    assert np.asarray(TokenFile(out / "train").tokens).tolist() == expected_stream(data, tok)
    assert np.asarray(TokenFile(out / "validation_en").tokens).tolist() == expected_stream(
        data, tok, "validation", "en")
    assert not (out / ".work" / "shards").exists()  # the tasks' shards, now in the folders; the job logs stay
    assert any((out / ".work" / "logs" / "slurm_logs").glob(f"{tasks['id']}_*.out"))


def test_a_slurm_task_lost_with_its_node_then_the_same_command_submits_only_that_task(sample_pipeline, tmp_path):
    """Task 2 of 3 never runs (the stand-in scheduler loses its node): the final job waits; the same
    command again submits that one task and the final job, and the token folders are the expected ones."""
    data, tok = str(sample_pipeline / "data"), str(sample_pipeline / "tok")
    state = tmp_path / "slurm"
    env = {"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "SLURM_STANDIN_DIR": str(state),
           "SLURM_STANDIN_LOSE_TASKS": "2"}
    cmd = ["--dataset-dir", data, "--tokenizer-dir", tok, "--output-dir", "tokens", "--executor", "slurm",
           "--slurm-partition", "cpu", "--tasks", "3", "--workers", "3"]

    def submitted(r):
        assert r.returncode == 0, r.stderr[-3000:]
        return pipeline_jobs(state, "tonsai-tokenize", "tonsai-tokenize-finish")

    tasks, final = submitted(script(cmd, env=env, cwd=tmp_path))
    assert tasks["exit_codes"][2] == 1 and not final["ran"] and not (tmp_path / "tokens" / "manifest.json").exists()
    del env["SLURM_STANDIN_LOSE_TASKS"]
    again, final = submitted(script(cmd, env=env, cwd=tmp_path))
    assert again["id"] != tasks["id"] and again["directives"]["array"].startswith("0-0")  # only the lost task
    assert again["exit_codes"] == [0] and final["exit_codes"] == [0]
    out = tmp_path / "tokens"
    assert np.asarray(TokenFile(out / "train").tokens).tolist() == expected_stream(data, tok)
    assert np.asarray(TokenFile(out / "validation_km").tokens).tolist() == expected_stream(
        data, tok, "validation", "km")


def test_slurm_needs_a_partition():
    with pytest.raises(SystemExit):
        parse_config(TokenizeConfig, "", ["--dataset-dir", "d", "--tokenizer-dir", "t", "--output-dir", "o",
                                          "--executor", "slurm"])
    with pytest.raises(ValueError, match="--executor slurm needs --slurm-partition"):
        TokenizeConfig("d", "t", "o", executor="slurm")


@pytest.mark.slow
def test_ray_executor_on_a_local_instance_builds_the_same_token_folders(sample_pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as tonsai does for the local instances it starts
    data, tok = str(sample_pipeline / "data"), str(sample_pipeline / "tok")
    paths = run_tokenize(TokenizeConfig(data, tok, str(tmp_path / "ray"), 2, tasks=3, executor="ray"))
    assert len(TokenFile(paths["train"]).meta["shards"]) == 3
    assert np.asarray(TokenFile(paths["train"]).tokens).tolist() == expected_stream(data, tok)
    assert np.asarray(TokenFile(paths["validation_km"]).tokens).tolist() == expected_stream(
        data, tok, "validation", "km")
