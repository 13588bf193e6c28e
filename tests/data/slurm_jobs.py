"""What the stand-in scheduler (tests/data/slurm_standin: sbatch, squeue, ... that run each array
task here) recorded of the jobs a stage submitted."""

import json
from pathlib import Path


def pipeline_jobs(state: Path, *names: str) -> list[dict]:
    """The last submitted job of each job name, datatrove's stats jobs left out (they share it)."""
    jobs = [json.loads(line) for line in (state / "jobs.jsonl").read_text().splitlines()]
    jobs = [j for j in jobs if "launch_pickled_pipeline" in j["script"]]
    return [[j for j in jobs if j["directives"].get("job-name") == name][-1] for name in names]
