"""Pushing a model folder (train_gpt2.py's ``final/``) or a tokenizer folder to the Hugging Face Hub.

huggingface_hub's ``HfApi`` does the transfer (``create_repo``, then ``upload_folder``: the
preupload call, the weights through Xet or LFS, one commit); tonsai writes the model card into the
folder first (:mod:`tonsai.publish.card`) and turns the usual mistakes (offline mode, no token, a
folder that is neither) into one clear error before anything is sent or trained.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from tonsai.atomic import write_text
from tonsai.errors import StageError
from tonsai.publish.card import check_license, model_card, tokenizer_card
from tonsai.tokenizer.export import make_portable

# huggingface_hub is imported inside the functions that use it: its HfApi, validators and ModelCard
# (tonsai.publish.card) add 0.17 s to push_to_hub.py --help on a 2-core machine, which never needs them.

log = logging.getLogger(__name__)
# training_args.bin is a pickle of the Trainer's arguments: nothing a user of the model needs
IGNORE = ["training_args.bin", ".tmp-*", "**/.tmp-*"]


@dataclasses.dataclass
class PushConfig:
    """Options of scripts/push_to_hub.py."""

    repo: str = dataclasses.field(metadata={"help": "Hub repository, NAME or OWNER/NAME (created if missing)"})
    model_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "model folder to push: train_gpt2.py's <output-dir>/final"})
    tokenizer_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "tokenizer folder to push instead: train_tokenizer.py's --output-dir"})
    eval_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "eval_model.py output folder whose report.json fills the card's evaluation table"})
    private: bool = dataclasses.field(default=False, metadata={
        "help": "create the repository private (an existing repository keeps its visibility)"})
    license: str = dataclasses.field(default="other", metadata={
        "help": "license id for the card's metadata, e.g. apache-2.0 or cc-by-4.0; it must suit the training "
                "data's licenses"})
    commit_message: str | None = dataclasses.field(default=None, metadata={"help": "commit message on the Hub"})
    dry_run: bool = dataclasses.field(default=False, metadata={
        "help": "write README.md (the card) into the folder and list what would be pushed, without the network"})

    def __post_init__(self) -> None:
        if (self.model_dir is None) == (self.tokenizer_dir is None):
            raise ValueError("give exactly one of --model-dir or --tokenizer-dir")
        if self.eval_dir is not None and self.model_dir is None:
            raise ValueError("--eval-dir describes a model: use it with --model-dir")
        check_repo_id(self.repo)


def check_repo_id(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise ValueError(f"--repo {repo!r} is not a Hub repository id (NAME or OWNER/NAME): {e}") from e


def check_can_push(repo: str) -> None:
    """Refuse early (before a training run, before writing anything) what would fail at the push."""
    from huggingface_hub import constants, get_token

    check_repo_id(repo)
    if constants.HF_HUB_OFFLINE:
        raise StageError(f"cannot push to {repo}: HF_HUB_OFFLINE=1 is set (offline mode). Run the push with "
                         "HF_HUB_OFFLINE=0, e.g. `HF_HUB_OFFLINE=0 uv run python scripts/push_to_hub.py ...`")
    if get_token() is None:
        raise StageError(f"cannot push to {repo}: no Hugging Face token. Set HF_TOKEN to a write token "
                         "(https://huggingface.co/settings/tokens) or run `uv run hf auth login`")


def _context(folder: Path) -> int | None:
    """The model's context length from config.json (None for a tokenizer folder)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return next((config[k] for k in ("n_positions", "max_position_embeddings") if k in config), None)


def write_card(folder: str | Path, repo: str, eval_dir: str | Path | None = None, license: str = "other") -> str:
    """Write README.md (the card) into a model or tokenizer folder; return ``"model"`` or ``"tokenizer"``.

    A tokenizer saved before tonsai wrote portable settings gets them here (tonsai.tokenizer.export)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder}: no such folder")
    if (folder / "config.json").is_file():
        kind, text = "model", model_card(folder, repo, eval_dir, license)
    elif (folder / "tokenizer.json").is_file():
        kind, text = "tokenizer", tokenizer_card(folder, repo, license)
    else:
        raise StageError(f"{folder}: neither a model folder (config.json) nor a tokenizer folder (tokenizer.json)")
    if (folder / "tokenizer_config.json").is_file() and make_portable(folder, _context(folder)):
        log.info("%s: tokenizer_config.json updated to load in transformers 4.x and 5.x", folder)
    write_text(folder / "README.md", text)
    log.info("model card written to %s", folder / "README.md")
    return kind


def push_folder(folder: str | Path, repo: str, private: bool = False, eval_dir: str | Path | None = None,
                license: str = "other", commit_message: str | None = None) -> str:
    """Write the card into ``folder`` and upload the folder to the Hub repository ``repo``; return the
    commit's URL."""
    from huggingface_hub import HfApi

    check_can_push(repo)
    kind = write_card(folder, repo, eval_dir, license)
    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=url.repo_id, folder_path=str(folder), repo_type="model",
                                   ignore_patterns=list(IGNORE),
                                   commit_message=commit_message or f"Upload {kind} from tonsai")
    except Exception as e:  # HTTP errors, a network down, a rejected file: the folder itself is complete
        raise StageError(f"pushing {folder} to {repo} failed: {type(e).__name__}: {e}. The folder is complete; "
                         f"push it again with `uv run python scripts/push_to_hub.py --{kind}-dir {folder} "
                         f"--repo {repo}`") from e
    log.info("pushed %s %s to %s (%s)", kind, folder, url, commit.commit_url)
    return commit.commit_url


def run_push(cfg: PushConfig) -> str | None:
    folder = cfg.model_dir or cfg.tokenizer_dir
    check_license(cfg.license)
    if cfg.dry_run:
        kind = write_card(folder, cfg.repo, cfg.eval_dir, cfg.license)
        from huggingface_hub.utils import filter_repo_objects

        files = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
        for name in filter_repo_objects(files, ignore_patterns=IGNORE):
            print(name)
        log.info("dry run: %s folder %s not pushed", kind, folder)
        return None
    return push_folder(folder, cfg.repo, cfg.private, cfg.eval_dir, cfg.license, cfg.commit_message)
