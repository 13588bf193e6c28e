"""Shared test setup: offline Hugging Face, a private HF_HOME, and the shared real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "tonsai" / "sample_corpus"


@pytest.fixture(autouse=True, scope="session")
def _hf_home(tmp_path_factory):
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip in a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real third-party data not found at {SHARED_DATA} (only present beside the dev checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_pipeline(tmp_path_factory):
    """prepare + tokenizer on the sample corpus, made once per session (cheap, no training)."""
    from tonsai.data.prepare import PrepareConfig, run_prepare
    from tonsai.tokenizer.bpe import TokenizerConfig, run_train_tokenizer

    root = tmp_path_factory.mktemp("sample_pipeline")
    run_prepare(PrepareConfig(output_dir=str(root / "data"), khmer=[str(SAMPLE / "km.txt")],
                              english=[str(SAMPLE / "en.txt")], validation_fraction=0.1, min_validation_docs=3))
    run_train_tokenizer(TokenizerConfig(output_dir=str(root / "tok"), dataset_dir=str(root / "data"), vocab_size=512))
    return root


@pytest.fixture(scope="session")
def trained_model(sample_pipeline) -> Path:
    """A tiny GPT-2 trained by the project on the sample corpus (about 10 s on CPU): ``<root>/run/final``.

    Evaluation tests use it so that they exercise a model this toolkit really produced."""
    from tonsai.train.config import TrainConfig
    from tonsai.train.run import run_train

    run_dir = sample_pipeline / "run"
    if not (run_dir / "final" / "config.json").is_file():
        run_train(TrainConfig(
            dataset_dir=str(sample_pipeline / "data"), tokenizer_dir=str(sample_pipeline / "tok"),
            model_config=str(REPO / "configs/model/gpt2_tiny.json"), output_dir=str(run_dir), block_size=128,
            micro_batch_size=8, max_steps=60, learning_rate=2e-3, warmup=0.05, eval_steps=20, save_steps=60,
            save_total_limit=1, logging_steps=1, seed=0, device="cpu", dataloader_workers=0, overwrite=True,
            report_to=[]))
    return run_dir / "final"
