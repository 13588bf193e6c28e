"""Fixtures shared by the training tests (their plain helpers are in runs.py)."""

import pytest

from tests.train.runs import config
from tonsai.train.run import run_train


@pytest.fixture(scope="session")
def plain_run(sample_pipeline, tmp_path_factory):
    """A plain 12-step CPU run of the tiny GPT-2 (checkpoints 6 and 12, final/): made once, read by the
    run, launch, resume, continual, guards, trainer and checkpoint tests (each copies it to change it)."""
    out = tmp_path_factory.mktemp("plain")
    manifest = run_train(config(sample_pipeline, out))
    return out, manifest
