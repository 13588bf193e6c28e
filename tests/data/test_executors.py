"""The prepare stage on datatrove's executors: local tasks, Slurm (a stand-in scheduler that runs
the real job scripts here), Ray (a local instance), and a kill -9 in the middle of the document step.
Each gives the same dataset as one local run."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.data.corpus import REPO, cfg, en_docs, km_docs, write_lines
from tests.data.slurm_jobs import pipeline_jobs
from tonsai.data.prepare import run_prepare
from tonsai.data.prepared import load_prepared

SHARED = REPO.parent / "shared" / "data"
STANDIN = Path(__file__).parent / "slurm_standin"
SCRIPT = str(REPO / "scripts" / "prepare_dataset.py")


def dataset_rows(path):
    """Every row of both splits in order (the shuffled order is part of the result)."""
    dd, manifest = load_prepared(path)
    return {split: list(zip(dd[split]["id"], dd[split]["text"])) for split in dd}, manifest


def corpus(tmp_path, n_km=60, n_en=80):
    km = write_lines(tmp_path / "km.txt", km_docs(n_km) + km_docs(4))  # exact duplicates across tasks
    en = write_lines(tmp_path / "en.txt", en_docs(n_en))
    return ["--khmer", km, "--english", en, "--min-validation-docs", "1", "--seed", "5"]


def run(args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **kw.pop("env", {}))
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, **kw)


def test_local_executor_with_one_and_three_tasks_give_the_same_dataset(tmp_path):
    args = corpus(tmp_path)
    with open(tmp_path / "km.txt", "ab") as f:  # an invalid UTF-8 line and a bad record: counted once, not per task
        f.write(km_docs(1, seed=9)[0].encode()[:-5] + b"\xff\xfe" + km_docs(1, seed=9)[0].encode()[-5:] + b"\n")
    (tmp_path / "en.jsonl").write_text('{"text": "%s"}\n{"text": \n' % en_docs(1, seed=9)[0], encoding="utf-8")
    args.insert(args.index("--english") + 2, str(tmp_path / "en.jsonl"))
    args += ["--bad-records", "skip"]
    assert run(args + ["--output-dir", str(tmp_path / "one")]).returncode == 0
    r = run(args + ["--output-dir", str(tmp_path / "three"), "--num-shards", "3", "--workers", "3"])
    assert r.returncode == 0, r.stderr[-3000:]
    # the console: one accounting line per source (read = kept + each drop reason), no per-task stats
    c = json.loads((tmp_path / "three" / "manifest.json").read_text())["counts"]["km:km.txt"]
    assert f"km:km.txt: read {c['read']:,}, kept {c['kept']:,}, dropped {c['read'] - c['kept']:,} (" in r.stderr
    assert "Stats: Task" not in r.stderr and "PIPELINE" not in r.stderr
    one, m1 = dataset_rows(tmp_path / "one")
    three, m3 = dataset_rows(tmp_path / "three")
    assert one == three and m1["counts"] == m3["counts"] and m3["document_tasks"] == 3
    assert m3["counts"]["km:km.txt"]["invalid_utf8_lines"] == 1
    assert m3["counts"]["en:en.jsonl"]["malformed_records"] == 1
    assert m3["skipped_record_locations"] == {"en:en.jsonl": {"malformed_json": [f"{tmp_path / 'en.jsonl'}:2"]}}
    # each task counts the UTF-8 bytes of its own documents: together, every document once
    lines = [ln.decode("utf-8", errors="replace").rstrip("\r\n") for name in ("km.txt", "en.txt")
             for ln in (tmp_path / name).read_bytes().splitlines()]
    expected = sum(len(ln.encode()) for ln in lines if ln.strip()) + len(en_docs(1, seed=9)[0].encode())
    assert [sum(t["bytes_in"] for t in m["shard_timings"]) for m in (m1, m3)] == [expected, expected]


def test_tasks_over_a_source_of_many_files_open_their_own_files_and_give_the_same_dataset(tmp_path):
    """Eight files of one source over four tasks: each task opens its quarter of them and at most
    two more (the files at its stripe's ends, shared with its neighbours), not every file."""
    folder = tmp_path / "km"
    folder.mkdir()
    for i in range(8):  # duplicates across files and tasks: the earliest survives, whoever read it
        write_lines(folder / f"part-{i}.txt", km_docs(30 + 7 * i, seed=i) + km_docs(3, seed=0))
    write_lines(tmp_path / "en.txt", en_docs(200))
    args = ["--khmer", "km", "--english", "en.txt", "--min-validation-docs", "1", "--seed", "5"]  # relative paths
    assert run(args + ["--output-dir", str(tmp_path / "one")], cwd=tmp_path).returncode == 0
    r = run(args + ["--output-dir", str(tmp_path / "four"), "--num-shards", "4", "--workers", "2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    one, m1 = dataset_rows(tmp_path / "one")
    four, m4 = dataset_rows(tmp_path / "four")
    assert one == four and m1["counts"] == m4["counts"] and m1["inputs"] == m4["inputs"]
    assert [i["path"] for i in m4["inputs"]] == [str(folder), str(tmp_path / "en.txt")]  # where the files are
    assert m1["counts"]["km:km"]["dropped:duplicate"] == 3 * 8  # file 0 begins with the same three
    opened = [t["inputs_opened"] for t in m4["shard_timings"]]
    assert [t["inputs_opened"] for t in m1["shard_timings"]] == [9]
    assert all(n <= 2 + 1 + 2 for n in opened) and sum(opened) <= 9 + 2 * 3, opened  # 8 / 4 = 2 of km, en shared


def test_merge_steps_in_parallel_processes_give_the_same_dataset(tmp_path, monkeypatch):
    """The merge's key partition, exact and near-duplicate buckets, spreading and bucket sorts in 2
    processes each (the size threshold lowered to 0), against one process; with forced bucket counts
    so that each step has several tasks (several near-dedup ranges: test_prepare_merge.py)."""
    km = write_lines(tmp_path / "km.txt", km_docs(90) + km_docs(6) + [km_docs(1)[0] + "ៗ"])
    en = write_lines(tmp_path / "en.txt", en_docs(90) + en_docs(5))
    base = dict(khmer=[km], english=[en], seed=2, num_shards=3, merge_buckets=5, write_rejected=True)
    one = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "one"), **base))
    monkeypatch.setattr("tonsai.data.splitwrite.PARALLEL_MIN_BYTES", 0)
    par = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "par"), workers=2, **base))
    assert par["counts"] == one["counts"] and par["counts"]["km:km.txt"]["dropped:duplicate"] >= 6
    assert dataset_rows(tmp_path / "par")[0] == dataset_rows(tmp_path / "one")[0]

    def rejected(out):
        return sorted(line for f in (out / "rejected").glob("*.jsonl.gz") for line in gzip.open(f, "rt"))
    assert rejected(tmp_path / "par") == rejected(tmp_path / "one") != []


def test_slurm_executor_submits_array_and_merge_jobs_that_build_the_same_dataset(tmp_path):
    args = corpus(tmp_path)
    assert run(args + ["--output-dir", str(tmp_path / "local")]).returncode == 0
    state = tmp_path / "slurm"
    env = {"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "SLURM_STANDIN_DIR": str(state)}
    r = run(args + ["--output-dir", str(tmp_path / "slurm_out"), "--executor", "slurm", "--slurm-partition", "cpu",
                    "--slurm-time", "2:00:00", "--num-shards", "3", "--workers", "2",
                    "--slurm-sbatch", "account=khmer-nlp", "constraint=cpu"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = [json.loads(line) for line in (state / "jobs.jsonl").read_text().splitlines()]
    docs = next(j for j in jobs if "tonsai-prepare-docs" == j["directives"].get("job-name"))
    merge = next(j for j in jobs if "tonsai-prepare-merge" == j["directives"].get("job-name"))
    d = docs["directives"]
    assert (d["partition"], d["time"], d["array"], d["account"], d["constraint"]) == (
        "cpu", "2:00:00", "0-2%2", "khmer-nlp", "cpu")
    assert "launch_pickled_pipeline" in docs["script"] and f"source {sys.prefix}/bin/activate" in docs["script"]
    assert merge["directives"]["array"] == "0-0"
    assert f"--dependency=afterok:{docs['id']}" in merge["args"]  # the merge waits for every document task
    assert docs["exit_codes"] == [0, 0, 0] and merge["exit_codes"] == [0]
    assert f"document tasks job {docs['id']}, merge job {merge['id']}" in r.stderr
    local, _ = dataset_rows(tmp_path / "local")
    slurm, manifest = dataset_rows(tmp_path / "slurm_out")
    assert slurm == local and manifest["document_tasks"] == 3


def test_slurm_merge_does_not_run_when_a_document_task_fails(tmp_path):
    args = corpus(tmp_path, n_km=10, n_en=10)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")  # malformed JSON on line 2
    state = tmp_path / "slurm"
    env = {"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "SLURM_STANDIN_DIR": str(state)}
    r = run(args + ["--english", str(bad), "--output-dir", str(tmp_path / "out"), "--executor", "slurm",
                    "--slurm-partition", "cpu"], env=env, cwd=tmp_path)
    assert r.returncode == 0  # submitted
    jobs = [json.loads(line) for line in (state / "jobs.jsonl").read_text().splitlines()]
    docs = next(j for j in jobs if j["directives"].get("job-name") == "tonsai-prepare-docs")
    merge = next(j for j in jobs if j["directives"].get("job-name") == "tonsai-prepare-merge")
    assert docs["exit_codes"] == [1] and not merge["ran"] and not (tmp_path / "out").exists()
    logs = "".join(f.read_text() for f in (tmp_path / "out.work" / "logs" / "docs" / "slurm_logs").glob("*.out"))
    assert "bad.jsonl:2" in logs  # the failing file and line, in the task's Slurm log


def test_a_slurm_task_lost_with_its_node_then_the_same_command_submits_only_that_task(tmp_path):
    """Task 1 of 3 never runs (its node is lost: the stand-in scheduler reports exit 1 without running
    it): the merge waits; the same command again submits an array of that one task and the merge, and
    the dataset is the one local run's."""
    args = corpus(tmp_path)
    assert run(args + ["--output-dir", str(tmp_path / "local")]).returncode == 0
    state = tmp_path / "slurm"
    env = {"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}", "SLURM_STANDIN_DIR": str(state),
           "SLURM_STANDIN_LOSE_TASKS": "1"}
    cmd = args + ["--output-dir", str(tmp_path / "out"), "--executor", "slurm", "--slurm-partition", "cpu",
                  "--num-shards", "3", "--workers", "3"]

    def submitted(r):
        assert r.returncode == 0, r.stderr[-3000:]
        return pipeline_jobs(state, "tonsai-prepare-docs", "tonsai-prepare-merge")

    docs, merge = submitted(run(cmd, env=env, cwd=tmp_path))
    assert docs["exit_codes"] == [0, 1, 0] and not merge["ran"] and not (tmp_path / "out").exists()
    del env["SLURM_STANDIN_LOSE_TASKS"]
    again, merge = submitted(run(cmd, env=env, cwd=tmp_path))
    assert again["id"] != docs["id"] and again["directives"]["array"].startswith("0-0")  # one task: the lost one
    assert again["exit_codes"] == [0] and merge["exit_codes"] == [0]
    assert dataset_rows(tmp_path / "out")[0] == dataset_rows(tmp_path / "local")[0]


def test_several_tasks_over_a_hub_stream_warn_that_each_streams_it_whole(tmp_path, monkeypatch, caplog):
    from tonsai.errors import StageError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level("WARNING"), pytest.raises(StageError):  # offline: the stream itself fails after
        run_prepare(cfg(tmp_path, khmer=["hf:tonsai-test/no-such-dataset"], num_shards=2))
    assert "each of the 2 document tasks streams the whole dataset from the Hub" in caplog.text


def test_slurm_needs_a_partition(tmp_path):
    r = run(corpus(tmp_path, 5, 5) + ["--output-dir", str(tmp_path / "o"), "--executor", "slurm"])
    assert r.returncode == 2 and "--executor slurm needs --slurm-partition" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data beside the checkout (the shared mix)")
def test_ray_executor_on_a_local_instance_prepares_the_shared_mix_like_local(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as tonsai does; Ray reads it when imported
    import ray

    mix = str(REPO / "configs" / "data" / "shared_km_en.yaml")
    local = run_prepare(cfg(tmp_path, mix=mix, output_dir=str(tmp_path / "local"), workers=2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the test's own local Ray instance
    try:
        on_ray = run_prepare(cfg(tmp_path, mix=mix, output_dir=str(tmp_path / "ray"), executor="ray", num_shards=3,
                                 workers=2))
    finally:
        ray.shutdown()
    assert on_ray["counts"] == local["counts"] and on_ray["executor"] == "ray"
    assert dataset_rows(tmp_path / "ray")[0] == dataset_rows(tmp_path / "local")[0]


def test_kill_9_during_the_document_step_then_rerun_skips_finished_tasks(tmp_path):
    args = corpus(tmp_path, n_km=6000, n_en=6000) + ["--num-shards", "4"]
    out, work = tmp_path / "out", tmp_path / "out.work"
    done = work / "logs" / "docs" / "completions"
    proc = subprocess.Popen([sys.executable, SCRIPT, *args, "--output-dir", str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.monotonic() + 300
    while not (done.is_dir() and any(done.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    finished_before = sorted(p.name for p in done.iterdir())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(finished_before) < 4 and not out.exists()
    before = {n: (work / "docs" / f"{n}.parquet").stat().st_mtime_ns for n in finished_before}
    r = run(args + ["--output-dir", str(out), "--keep-work-dir"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{len(finished_before)} of 4 document tasks are finished already" in r.stderr
    assert all((work / "docs" / f"{n}.parquet").stat().st_mtime_ns == t for n, t in before.items())
    assert run(args + ["--output-dir", str(tmp_path / "clean")]).returncode == 0
    assert dataset_rows(out)[0] == dataset_rows(tmp_path / "clean")[0]
