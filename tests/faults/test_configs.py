"""Issue 13's config probes, met the way a user meets them: a typo or nonsense in a model config,
a typo'd stage YAML, nan mixing weights. Each asserts the exit code, the message with the closest
valid name, and that no work was done (no run files, no shard folder)."""

import json
import time

import pytest

from tonsai.cli import parse_config
from tonsai.errors import StageError
from tonsai.train.config import TrainConfig

from ..conftest import REPO, SAMPLE
from . import script

KM, EN = str(SAMPLE / "km.txt"), str(SAMPLE / "en.txt")
RUN_FILES = ("final", "metrics.jsonl", "manifest.json", "tokens")


def model_config(tmp_path, **changes):
    data = {**json.loads((REPO / "configs/model/gpt2_tiny.json").read_text()), **changes}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    return path


def nothing_trained(out):
    return not out.exists() or not (any((out / f).exists() for f in RUN_FILES) or list(out.glob("checkpoint-*")))


def test_model_config_typo_stops_the_real_train_script(sample_pipeline, tmp_path):
    """`"n_layr": 2` trained the 12-layer default with exit 0."""
    cfg, out = model_config(tmp_path, n_layr=2), tmp_path / "run"
    r = script("train_gpt2.py", "--dataset-dir", sample_pipeline / "data", "--tokenizer-dir", sample_pipeline / "tok",
               "--model-config", cfg, "--output-dir", out, "--device", "cpu", "--max-steps", 2, "--block-size", 64)
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"error: --model-config {cfg}: unknown key 'n_layr' (did you mean n_layer?)" in r.stderr
    assert "Traceback" not in r.stderr and nothing_trained(out)


@pytest.mark.parametrize("changes, message", [
    ({"n_layer": -2}, "n_layer is -2; it must be a positive integer"),  # trained a model with no layers, exit 0
    ({"n_embd": 130}, "n_embd 130 is not divisible by n_head 4"),  # a raw traceback from GPT2Attention
])
def test_impossible_model_config_stops_training_before_any_work(sample_pipeline, tmp_path, changes, message):
    from tonsai.train.run import run_train

    cfg, out = model_config(tmp_path, **changes), tmp_path / "run"
    with pytest.raises(StageError) as e:
        run_train(TrainConfig(dataset_dir=str(sample_pipeline / "data"), tokenizer_dir=str(sample_pipeline / "tok"),
                              model_config=str(cfg), output_dir=str(out), block_size=64, micro_batch_size=4,
                              max_steps=2, device="cpu", dataloader_workers=0))
    assert str(e.value) == f"--model-config {cfg}: {message}" + (" (each head gets n_embd / n_head channels); "
                                                                   "use e.g. n_embd 128 or 132" if "130" in message else "")
    assert nothing_trained(out)


def test_stage_yaml_typo_exits_2_with_the_closest_option(tmp_path):
    """Through prepare_dataset.py; every script reads --config with the same parse_config (the
    train stage's YAML is checked in-process below, without a 25 s transformers import)."""
    conf, out = tmp_path / "stage.yaml", tmp_path / "out"
    conf.write_text(f"khmer: [{KM}]\nenglish: [{EN}]\nmin_char: 10\n")
    r = script("prepare_dataset.py", "--config", conf, "--output-dir", out)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"error: --config {conf}: unknown option 'min_char' (did you mean min_chars?)" in r.stderr
    assert not out.exists() and not (tmp_path / "out.work").exists()


REQUIRED = "dataset_dir: d\ntokenizer_dir: t\nmodel_config: m.json\noutput_dir: o\n"


@pytest.mark.parametrize("text, message", [
    ("max_steps: ten\n", "max_steps: expected an integer, got the string 'ten'"),
    ("max_steps: 2.5\n", "max_steps: expected an integer, got a number 2.5"),
    ("learning_rate: fast\n", "learning_rate: expected a number, got the string 'fast'"),
    ("overwrite: 1\n", "overwrite: expected true or false, got an integer 1"),
    ("device: gpu\n", "device: 'gpu' is not one of ['auto', 'cuda', 'cpu']"),
    ("lr_schedule: cosin\n", "(did you mean cosine?)"),
    ("report_to: tensorboard\n", "report_to: expected a list"),
    ("dataset_dir: 3\n", "dataset_dir: expected a string"),
    ("max_steps: ten\nwarmpu: 0.1\n", "unknown option 'warmpu' (did you mean warmup?); max_steps: expected an integer"),
])
def test_stage_yaml_values_of_the_wrong_type_name_the_field(tmp_path, capsys, text, message):
    conf = tmp_path / "train.yaml"
    conf.write_text(REQUIRED + text)
    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig, "train", ["--config", str(conf)])
    assert e.value.code == 2 and f"--config {conf}: " in (err := capsys.readouterr().err) and message in err


def test_stage_yaml_reads_yaml_numbers_and_flags_override_it(tmp_path):
    conf = tmp_path / "train.yaml"
    conf.write_text(REQUIRED + "learning_rate: 1e-3\nmax_steps: 7\nreport_to: []\nwarmup: 10\n")
    cfg = parse_config(TrainConfig, "train", ["--config", str(conf), "--max-steps", "9"])
    assert (cfg.learning_rate, cfg.max_steps, cfg.report_to, cfg.warmup) == (0.001, 9, [], 10.0)


@pytest.mark.parametrize("args, code, message", [
    (["--khmer-weight", "nan"], 2, "--khmer-weight nan: weights must be >= 0 and finite"),
    (["--english-weight", "inf"], 2, "--english-weight inf: weights must be >= 0 and finite"),
    (["--mix", "MIX"], 1, "--mix MIX: source km:km.txt: weight nan must be >= 0 and finite (source #1)"),
])
def test_nan_weights_fail_in_seconds_before_any_shard_folder(tmp_path, args, code, message):
    """They failed only after the shard phase, with "min() arg is an empty sequence"."""
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"sources:\n  - {{path: {KM}, lang: km, weight: .nan}}\n  - {{path: {EN}, lang: en}}\n")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = script("prepare_dataset.py", "--khmer", KM, "--english", EN, "--output-dir", out,
               *[str(mix) if a == "MIX" else a for a in args])
    elapsed = time.perf_counter() - t0
    assert r.returncode == code and f"error: {message.replace('MIX', str(mix))}" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not out.exists() and not (tmp_path / "out.work").exists()
    print(f"failed in {elapsed:.1f} s")


@pytest.mark.parametrize("flag, value, message", [
    ("--learning-rate", "nan", "--learning-rate must be a finite number"),
    ("--learning-rate", "0", "--learning-rate must be positive"),
    ("--warmup", "nan", "--warmup must be a finite number"),
    ("--max-grad-norm", "inf", "--max-grad-norm must be a finite number"),
    ("--weight-decay", "-1", "--weight-decay must be >= 0"),
    ("--min-free-disk-gb", "-5", "--min-free-disk-gb must be >= 0"),
])
def test_impossible_training_numbers_are_usage_errors(tmp_path, capsys, flag, value, message):
    args = ["--dataset-dir", str(tmp_path), "--tokenizer-dir", str(tmp_path), "--model-config", "m.json",
            "--output-dir", str(tmp_path / "run"), flag, value]
    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig, "train", args)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
