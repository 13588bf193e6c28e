"""The Trainer's validation (tonsai.train.trainer): the validation stream reads windows lazily and caps
tokens, and the figures a run logs are eval_model.py's for the same model and split."""

import pytest

from tests.train.runs import losses


def test_validation_stream_reads_windows_lazily_and_caps_tokens():
    import numpy as np

    from tonsai.train.trainer import ValidationStream

    tokens = np.arange(10, 30, dtype=np.uint16)
    vs = ValidationStream(tokens, eos_id=0, block_size=8, stride=4, pad_id=1)
    whole = np.concatenate([[0], tokens]).astype(np.int64)
    assert len(vs) == 21
    for b, e in ((0, 8), (0, 1), (4, 12), (13, 21), (3, 3)):
        assert vs[b:e].tolist() == whole[b:e].tolist()
    capped = ValidationStream(tokens, eos_id=0, block_size=8, stride=4, pad_id=1, max_tokens=5)
    assert len(capped) == 6 and capped[0:50].tolist() == [0, 10, 11, 12, 13, 14]


def test_training_validation_is_eval_model_on_the_same_split(plain_run, sample_pipeline, tmp_path):
    """Training validates with eval_model.py's own scoring (tonsai.eval.perplexity.score_tokens) and
    byte count: for the same model, split, window and stride, the loss and bits per byte a run logs
    at its last step are the figures eval_model.py reports."""
    from tonsai.eval.run import EvalConfig, run_eval

    report = run_eval(EvalConfig(model_dir=str(plain_run[0] / "final"), output_dir=str(tmp_path / "eval"),
                                 dataset_dir=str(sample_pipeline / "data"), device="cpu"))  # the run's window
    for lang in ("km", "en"):
        mine = report["languages"][lang]
        for key, theirs in (("loss", mine["loss"]), ("bpb", mine["bits_per_byte"])):
            step, logged = losses(plain_run[0], f"eval_{lang}_{key}")[-1]
            assert step == 12
            assert logged == pytest.approx(theirs, rel=1e-5), (lang, key)
        assert losses(plain_run[0], f"eval_{lang}_tokens")[-1][1] == mine["tokens"]
