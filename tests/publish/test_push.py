"""Pushing to the Hub, against a local stand-in for the Hub's HTTP API (tests/publish/hub_standin.py).

The scripts run for real in a subprocess (huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE
when it is imported): only the remote service is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tonsai.errors import StageError
from tonsai.train.run import run_train

from ..conftest import REPO
from ..train.runs import common_args, config
from .hub_standin import HubStandIn

TOKEN = "hf_standin_write_token"


def run_tool(script: str, args: list[str], hub: HubStandIn | None, tmp_path: Path, xet: bool = False, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_DISABLE_XET")}
    base.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1")
    if hub is not None:
        base.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
    if not xet:  # the stand-in speaks LFS, not Xet's binary protocol
        base["HF_HUB_DISABLE_XET"] = "1"
    base.update(env)
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=REPO, env=base,
                          capture_output=True, text=True, timeout=900)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def pushed_files(folder: Path) -> dict[str, bytes]:
    """The folder's files that a push sends as they are (no pickle, no README.md: the card is made for the push)."""
    return {name: data for name, data in folder_files(folder).items()
            if not name.endswith(".bin") and name != "README.md"}


@pytest.fixture()
def model_copy(trained_model, tmp_path) -> Path:
    """final/ and its run manifest, copied (a test that writes into the folder leaves the shared one alone)."""
    run = tmp_path / "run"
    shutil.copytree(trained_model, run / "final")
    shutil.copy(trained_model.parent / "manifest.json", run / "manifest.json")
    return run / "final"


def test_push_model_folder_sends_every_file_and_the_weights_through_lfs(model_copy, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a final/ saved before tonsai wrote portable tokenizer settings (what transformers 5 writes by itself)
    old = {"backend": "tokenizers", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "is_local": True,
           "model_max_length": 1 << 30, "pad_token": "<|pad|>", "tokenizer_class": "TokenizersBackend"}
    (model_copy / "tokenizer_config.json").write_text(json.dumps(old))
    tokenizer_json = (model_copy / "tokenizer.json").read_bytes()
    before = folder_files(model_copy)
    with HubStandIn(TOKEN) as hub:
        proc = run_tool("push_to_hub.py", ["--model-dir", str(model_copy), "--repo", "someone/tonsai-tiny",
                                           "--private", "--license", "apache-2.0"], hub, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    repo = hub.repos["someone/tonsai-tiny"]
    assert repo["private"]
    assert folder_files(model_copy) == before  # the folder given is never changed
    local = pushed_files(model_copy)
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "manifest.json"} <= set(local)
    # every file arrived, byte for byte, with the card and the portable tokenizer_config.json made for the push;
    # training_args.bin (a pickle) stayed
    assert set(repo["files"]) == set(local) | {"README.md"}
    assert {k: v for k, v in repo["files"].items() if k not in ("README.md", "tokenizer_config.json")} == \
        {k: v for k, v in local.items() if k != "tokenizer_config.json"}
    assert repo["commits"][0]["lfs"] == ["model.safetensors"]  # the weights went through LFS, text inline
    card = repo["files"]["README.md"]
    assert set(hub.card_yaml) == {card.decode()}  # the card was validated before the upload
    assert b"license: apache-2.0" in card
    # what arrived is a working model
    hub_copy = tmp_path / "from_hub"
    for name, data in repo["files"].items():
        (hub_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (hub_copy / name).write_bytes(data)
    tok = AutoTokenizer.from_pretrained(hub_copy)
    model = AutoModelForCausalLM.from_pretrained(hub_copy)
    assert tok.model_max_length == model.config.n_positions and tok.padding_side == "left"
    config = json.loads(repo["files"]["tokenizer_config.json"])
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and "is_local" not in config  # made portable
    assert repo["files"]["tokenizer.json"] == tokenizer_json


def test_push_tokenizer_folder_with_the_default_xet_client(sample_pipeline, tmp_path):
    folder = tmp_path / "tok"
    shutil.copytree(sample_pipeline / "tok", folder)
    with HubStandIn(TOKEN) as hub:
        # hf_xet installed and enabled, as for users: text files go inline in the commit
        proc = run_tool("push_to_hub.py", ["--tokenizer-dir", str(folder), "--repo", "tok-only"], hub, tmp_path,
                        xet=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    repo = hub.repos["user/tok-only"]
    assert not repo["private"]
    assert {k: v for k, v in repo["files"].items() if k != "README.md"} == pushed_files(folder)
    assert {"README.md", "tokenizer.json", "tokenizer_config.json", "fertility.json"} <= set(repo["files"])
    assert b"- tokenizer" in repo["files"]["README.md"]


def test_push_refuses_offline_mode_no_token_and_a_wrong_token(model_copy, tmp_path):
    args = ["--model-dir", str(model_copy), "--repo", "someone/x"]
    proc = run_tool("push_to_hub.py", args, None, tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 1 and "HF_HUB_OFFLINE=1 is set" in proc.stderr
    proc = run_tool("push_to_hub.py", args, None, tmp_path)
    assert proc.returncode == 1 and "no Hugging Face token" in proc.stderr and "HF_TOKEN" in proc.stderr
    with HubStandIn("another-token") as hub:
        proc = run_tool("push_to_hub.py", args, hub, tmp_path)
    assert proc.returncode == 1 and "pushing" in proc.stderr and "401" in proc.stderr
    assert f"push it again with `uv run python scripts/push_to_hub.py --model-dir {model_copy}" in proc.stderr
    assert hub.repos == {}
    proc = run_tool("push_to_hub.py", ["--model-dir", str(model_copy), "--repo", "a/b/c"], None, tmp_path)
    assert proc.returncode == 2 and "not a Hub repository id" in proc.stderr


def test_dry_run_lists_the_files_and_changes_nothing(model_copy, tmp_path):
    # an older final/ whose tokenizer_config.json a push makes portable: in what it uploads, not in the folder
    config = json.loads((model_copy / "tokenizer_config.json").read_text())
    (model_copy / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "TokenizersBackend"}))
    before = folder_files(model_copy)
    card = tmp_path / "card.md"
    proc = run_tool("push_to_hub.py", ["--model-dir", str(model_copy), "--repo", "someone/x", "--dry-run",
                                       "--card-out", str(card)], None, tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert folder_files(model_copy) == before
    assert proc.stdout.split() == sorted([*pushed_files(model_copy), "README.md"])
    assert "training_args.bin" not in proc.stdout
    assert "made for the upload: README.md, tokenizer_config.json" in proc.stderr
    assert card.read_text().startswith("---\nlanguage:")
    proc = run_tool("push_to_hub.py", ["--model-dir", str(model_copy), "--repo", "someone/x", "--dry-run",
                                       "--card-out", str(card)], None, tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 1 and f"--card-out {card} already exists" in proc.stderr


def test_a_training_checkpoint_is_refused_and_left_as_it_was(trained_model, tmp_path):
    from tonsai.train.checkpoint import newest_verified, write_checksums

    # a checkpoint as the Trainer leaves one (model files, optimizer, scheduler, RNG and trainer state), verified
    run = tmp_path / "run"
    ckpt = run / "checkpoint-60"
    shutil.copytree(trained_model, ckpt, ignore=shutil.ignore_patterns("manifest.json"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (ckpt / name).write_bytes(b"pickle")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 60}))
    write_checksums(ckpt)
    before = folder_files(ckpt)
    with HubStandIn(TOKEN) as hub:
        for extra, stand_in in ((["--dry-run"], None), ([], hub)):
            proc = run_tool("push_to_hub.py", ["--model-dir", str(ckpt), "--repo", "someone/x", *extra], stand_in,
                            tmp_path, HF_HUB_OFFLINE="1" if stand_in is None else "0")
            assert proc.returncode == 1, proc.stderr[-4000:]
            assert f"{ckpt} is a training checkpoint" in proc.stderr and str(run / "final") in proc.stderr
    assert hub.repos == {}
    assert folder_files(ckpt) == before
    assert newest_verified(run)[0] == ckpt  # still verifies: resuming from it works
    # the clean copy the message asks for is told apart by its files, whatever its name
    from tonsai.publish.push import PushConfig, run_push

    clean = tmp_path / "export" / "checkpoint-60"
    shutil.copytree(trained_model, clean)
    assert run_push(PushConfig(repo="someone/x", model_dir=str(clean), dry_run=True)) is None


def test_a_folder_that_would_not_load_is_refused_before_any_upload(model_copy, sample_pipeline, tmp_path):
    from tonsai.publish.push import PushConfig, run_push

    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    with HubStandIn(TOKEN) as hub:
        proc = run_tool("push_to_hub.py", ["--model-dir", str(model_copy), "--repo", "someone/x"], hub, tmp_path)
    assert proc.returncode == 1
    assert f"--model-dir {model_copy}: no model weights (model.safetensors)" in proc.stderr
    assert "nothing was pushed" in proc.stderr
    assert hub.repos == {} and hub.card_yaml == []  # refused before the token, the repository or any upload
    with pytest.raises(StageError, match=r"no model weights \(model.safetensors\)"):
        run_push(PushConfig(repo="someone/x", model_dir=str(model_copy), dry_run=True))
    weights.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(StageError, match="model.safetensors is not a complete safetensors file"):
        run_push(PushConfig(repo="someone/x", model_dir=str(model_copy), dry_run=True))
    weights.write_bytes(data)
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(StageError, match=r"no tokenizer \(tokenizer.json\).*nothing was pushed"):
        run_push(PushConfig(repo="someone/x", model_dir=str(model_copy), dry_run=True))
    tok = tmp_path / "tok"
    shutil.copytree(sample_pipeline / "tok", tok)
    (tok / "tokenizer_config.json").unlink()
    with pytest.raises(StageError, match=f"--tokenizer-dir {tok}: missing tokenizer_config.json"):
        run_push(PushConfig(repo="someone/x", tokenizer_dir=str(tok), dry_run=True))


def test_a_readme_of_the_users_is_never_replaced(model_copy, tmp_path):
    theirs = "---\nlicense: mit\n---\n\n# My model\n\nNotes I wrote.\n"
    (model_copy / "README.md").write_text(theirs)
    before = folder_files(model_copy)
    args = ["--model-dir", str(model_copy)]
    proc = run_tool("push_to_hub.py", [*args, "--repo", "someone/x", "--dry-run"], None, tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 1
    assert f"{model_copy / 'README.md'} exists and is not the card tonsai makes: pass --card folder" in proc.stderr
    assert "--card generated" in proc.stderr
    with HubStandIn(TOKEN) as hub:
        refused = run_tool("push_to_hub.py", [*args, "--repo", "someone/refused"], hub, tmp_path)
        kept = run_tool("push_to_hub.py", [*args, "--repo", "someone/kept", "--card", "folder"], hub, tmp_path)
        generated = run_tool("push_to_hub.py", [*args, "--repo", "someone/generated", "--card", "generated"], hub,
                             tmp_path)
    assert refused.returncode == 1 and "someone/refused" not in hub.repos  # refused before anything was sent
    assert kept.returncode == 0, kept.stderr[-4000:]
    assert generated.returncode == 0, generated.stderr[-4000:]
    assert hub.repos["someone/kept"]["files"]["README.md"] == theirs.encode()
    card = hub.repos["someone/generated"]["files"]["README.md"].decode()
    assert card != theirs and "## Training data" in card
    assert folder_files(model_copy) == before  # their file, and the folder, as they were


def test_training_with_push_to_hub_pushes_final_with_its_card(sample_pipeline, tmp_path):
    out = tmp_path / "run"
    args = common_args(sample_pipeline, out, steps=2) + ["--eval-steps", "2", "--save-steps", "2",
                                                          "--report-to", "none", "--push-to-hub", "someone/trained"]
    with HubStandIn(TOKEN) as hub:
        proc = run_tool("train_gpt2.py", args, hub, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = hub.repos["someone/trained"]["files"]
    assert {k: v for k, v in files.items() if k != "README.md"} == pushed_files(out / "final")
    assert not (out / "final" / "README.md").exists()
    run = json.loads((out / "manifest.json").read_text())
    card = files["README.md"].decode()
    assert f"| final validation loss, English (`en`) | {run['final_validation']['eval_en_loss']:.4f} |" in card
    assert json.loads(files["tokenizer_config.json"])["model_max_length"] == 256  # gpt2_tiny's context


def test_training_with_push_to_hub_offline_fails_before_training(sample_pipeline, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(StageError, match="HF_HUB_OFFLINE=1 is set"):  # conftest sets offline mode
        run_train(config(sample_pipeline, out, push_to_hub="someone/x"))
    assert not out.exists()


def test_push_script_help():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "push_to_hub.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert "Examples:" in proc.stdout and "--tokenizer-dir" in proc.stdout and "(default: other)" in proc.stdout


def test_card_out_writes_the_generated_card_whatever_is_uploaded(model_copy, tmp_path):
    from tonsai.publish.push import PushConfig, run_push

    (model_copy / "README.md").write_text("# mine\n")
    out = tmp_path / "card.md"
    run_push(PushConfig(repo="someone/x", model_dir=str(model_copy), dry_run=True, card="folder", card_out=str(out)))
    card = out.read_text()
    assert card != "# mine\n" and "someone/x" in card  # the generated card, not the link to the user's file
    with pytest.raises(StageError, match="--dry-run --card generated --card-out FILE"):
        run_push(PushConfig(repo="someone/x", model_dir=str(model_copy), dry_run=True))
