"""Pushing a model folder (train_gpt2.py's ``final/``) or a tokenizer folder to the Hugging Face Hub.

huggingface_hub's ``HfApi`` does the transfer (``create_repo``, then ``upload_folder``: the
preupload call, the weights through Xet or LFS, one commit); tonsai turns the usual mistakes
(offline mode, no token, a folder that is neither, a training checkpoint) into one clear error
before anything is sent or trained.

The folder given is never changed: what is uploaded is staged in a temporary folder outside it
(:func:`staged_upload`), which holds the files tonsai makes (README.md, the model card of
:mod:`tonsai.publish.card`, and tokenizer_config.json made loadable by transformers 4.x and 5.x)
and links to the folder's other files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tonsai.atomic import write_text
from tonsai.errors import StageError
from tonsai.model.folder import check_model_folder
from tonsai.publish.card import check_license, model_card, tokenizer_card
from tonsai.tokenizer.export import make_portable

# huggingface_hub is imported inside the functions that use it: its HfApi, validators and ModelCard
# (tonsai.publish.card) add 0.17 s to push_to_hub.py --help on a 2-core machine, which never needs them.

log = logging.getLogger(__name__)
# never pushed: pickles (loading one runs code: training_args.bin, a checkpoint's optimizer, scheduler and RNG
# states, old-style weights) and the temporary files of a stage still writing
IGNORE = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", ".tmp-*", "**/.tmp-*"]
# written into the staging folder, not linked: tonsai changes them (the card; make_portable)
COPIED = ("tokenizer_config.json", "chat_template.jinja")
# a training checkpoint is told by its files, not its name (a clean copy may be called checkpoint-4000)
CHECKPOINT_FILES = ("trainer_state.json", "checksums.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
# what a model or tokenizer folder needs to load (weights: model.safetensors, or the shards its index lists)
REQUIRED = {"model": ("config.json", "tokenizer.json", "tokenizer_config.json"),
            "tokenizer": ("tokenizer.json", "tokenizer_config.json")}
CARD_CHOICES = ("auto", "folder", "generated")


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
        "help": "list the files that would be pushed, without the network; the folder is not changed"})
    card: str = dataclasses.field(default="auto", metadata={
        "help": "the README.md to upload: auto (the generated card; refused if the folder has a README.md of its own), "
                "folder (the folder's README.md as it is) or generated (the generated card; the folder's file stays "
                "as it is)", "choices": list(CARD_CHOICES)})
    card_out: str | None = dataclasses.field(default=None, metadata={
        "help": "with --dry-run: also write the generated card (README.md) to this new file, outside the folder, "
                "to read it"})

    def __post_init__(self) -> None:
        if (self.model_dir is None) == (self.tokenizer_dir is None):
            raise ValueError("give exactly one of --model-dir or --tokenizer-dir")
        if self.eval_dir is not None and self.model_dir is None:
            raise ValueError("--eval-dir describes a model: use it with --model-dir")
        if self.card not in CARD_CHOICES:
            raise ValueError(f"--card must be one of {', '.join(CARD_CHOICES)}, got {self.card!r}")
        if self.card_out is not None and not self.dry_run:
            raise ValueError("--card-out goes with --dry-run (a push uploads the card)")
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


def _check_files(folder: Path, kind: str) -> None:
    """Refuse a folder that lacks what its kind needs to load, naming the file: a model folder is
    checked as every stage that loads one checks it (:func:`tonsai.model.folder.check_model_folder`),
    then for the files a published folder also needs."""
    flag = f"--{kind}-dir"
    if kind == "model":
        try:
            check_model_folder(folder, flag=flag)
        except StageError as e:
            raise StageError(f"{e}; nothing was pushed") from None
    missing = [name for name in REQUIRED[kind] if not (folder / name).is_file()]
    if missing:
        made_by = "train_gpt2.py's or train_sft.py's final/" if kind == "model" else "train_tokenizer.py's --output-dir"
        raise StageError(f"{flag} {folder}: missing {', '.join(missing)}, so the pushed {kind} would not load; "
                         f"nothing was pushed. Pass the complete folder ({made_by}), or copy the missing files back "
                         f"into it")


def check_folder(folder: str | Path, kind: str | None = None) -> str:
    """What ``folder`` is, ``"model"`` or ``"tokenizer"`` (``kind``, when the user named it), with every file it
    needs to load; a :class:`StageError` for anything not to publish."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError(f"{folder}: no such folder")
    if any((folder / f).is_file() for f in CHECKPOINT_FILES):
        raise StageError(f"{folder} is a training checkpoint (optimizer state, checksums.json): it resumes a run and "
                         f"is not published. Push the run's finished model folder instead "
                         f"({folder.parent / 'final'}); to publish the weights of this step, copy its config.json, "
                         f"generation_config.json, model.safetensors and tokenizer files into a new folder and push "
                         f"that")
    if kind is None:
        if (folder / "config.json").is_file():
            kind = "model"
        elif (folder / "tokenizer.json").is_file():
            kind = "tokenizer"
        else:
            raise StageError(f"{folder}: neither a model folder (config.json) nor a tokenizer folder (tokenizer.json)")
    _check_files(folder, kind)
    return kind


def make_card(folder: str | Path, repo: str, eval_dir: str | Path | None = None,
              license: str = "other", kind: str | None = None) -> tuple[str, str]:
    """``(kind, README.md text)`` for a model or tokenizer folder; nothing is written."""
    kind = check_folder(folder, kind)
    if kind == "model":
        return kind, model_card(folder, repo, eval_dir, license)
    return kind, tokenizer_card(folder, repo, license)


@dataclasses.dataclass
class Staged:
    """What :func:`staged_upload` prepared: the folder to upload and the files tonsai made in it."""

    kind: str
    path: Path
    files: list[str]
    generated: list[str]
    card: str  # the generated card, uploaded or not


def _files(folder: Path) -> list[str]:
    from huggingface_hub.utils import filter_repo_objects

    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(names, ignore_patterns=IGNORE))


@contextlib.contextmanager
def staged_upload(folder: str | Path, repo: str, eval_dir: str | Path | None = None,
                  license: str = "other", kind: str | None = None, card_choice: str = "auto") -> Iterator[Staged]:
    """A temporary folder (removed afterwards) holding what a push of ``folder`` uploads: links to its files,
    the card and a portable tokenizer_config.json. ``folder`` itself is only read.

    ``card_choice`` (:data:`CARD_CHOICES`) decides between the generated card and a README.md the folder
    already has (the user's, or a card they edited): ``auto`` refuses to choose unless the two are equal.

    A tokenizer saved before tonsai wrote portable settings gets them in the staged copy
    (tonsai.tokenizer.export)."""
    folder = Path(folder)
    kind, card = make_card(folder, repo, eval_dir, license, kind)
    own = folder / "README.md"
    if card_choice == "folder" and not own.is_file():
        raise StageError(f"--card folder: {folder} has no README.md; pass --card auto to upload the generated card")
    keep = own.is_file() and card_choice != "generated"
    if keep and card_choice == "auto" and own.read_bytes() != card.encode("utf-8"):
        raise StageError(f"{own} exists and is not the card tonsai makes: pass --card folder to upload it as it is, "
                         f"or --card generated to upload the generated card instead (your file stays as it is "
                         f"either way; --dry-run --card generated --card-out FILE shows the generated one)")
    with tempfile.TemporaryDirectory(prefix="tonsai-push-") as tmp:
        stage, generated = Path(tmp) / folder.name, []
        for name in _files(folder):
            src, dst = folder / name, stage / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if name in COPIED:
                shutil.copyfile(src, dst)
            else:
                os.symlink(src.resolve(), dst)
        if (stage / "tokenizer_config.json").is_file() and make_portable(
                stage, _context(folder) if kind == "model" else None):
            log.info("%s: tokenizer_config.json made loadable by transformers 4.x and 5.x for the upload "
                     "(the folder's own file is unchanged)", folder)
            generated.append("tokenizer_config.json")
        if not keep:
            (stage / "README.md").unlink(missing_ok=True)  # the link to the folder's file, not the file
            (stage / "README.md").write_text(card, encoding="utf-8")
            generated.append("README.md")
        elif card_choice == "folder":
            log.info("%s: uploaded as it is (--card folder); the generated card is not used", own)
        yield Staged(kind, stage, _files(stage), sorted(generated), card)


def push_folder(folder: str | Path, repo: str, private: bool = False, eval_dir: str | Path | None = None,
                license: str = "other", commit_message: str | None = None, kind: str | None = None,
                card_choice: str = "auto") -> str:
    """Upload ``folder`` with its card to the Hub repository ``repo`` (the folder is not changed); return the
    commit's URL."""
    from huggingface_hub import HfApi

    kind = check_folder(folder, kind)  # before the token and the network: a folder that would not load is refused
    check_can_push(repo)
    api = HfApi()
    with staged_upload(folder, repo, eval_dir, license, kind, card_choice) as staged:
        kind = staged.kind
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(repo_id=url.repo_id, folder_path=str(staged.path), repo_type="model",
                                       ignore_patterns=list(IGNORE),
                                       commit_message=commit_message or f"Upload {kind} from tonsai")
        except Exception as e:  # HTTP errors, a network down, a rejected file: the folder itself is complete
            again = (f"uv run python scripts/push_to_hub.py --{kind}-dir {folder} --repo {repo}"
                     + (f" --eval-dir {eval_dir}" if eval_dir else "") + (" --private" if private else "")
                     + (f" --license {license}" if license != "other" else "")
                     + (f" --card {card_choice}" if card_choice != "auto" else ""))
            raise StageError(f"pushing {folder} to {repo} failed: {type(e).__name__}: {e}. The folder is complete; "
                             f"push it again with `{again}`") from e
    log.info("pushed %s %s to %s (%s)", kind, folder, url, commit.commit_url)
    return commit.commit_url


def run_push(cfg: PushConfig) -> str | None:
    folder = cfg.model_dir or cfg.tokenizer_dir
    kind = "model" if cfg.model_dir else "tokenizer"
    check_license(cfg.license)
    if cfg.dry_run:
        card_out = Path(cfg.card_out) if cfg.card_out else None
        if card_out is not None:
            if card_out.exists():
                raise StageError(f"--card-out {card_out} already exists: choose a new file name")
            if card_out.resolve().is_relative_to(Path(folder).resolve()):
                raise StageError(f"--card-out {card_out} lies inside {folder}: the folder is never changed; "
                                 f"choose a file outside it")
        with staged_upload(folder, cfg.repo, cfg.eval_dir, cfg.license, kind, cfg.card) as staged:
            for name in staged.files:
                print(name)
            if card_out is not None:
                write_text(card_out, staged.card)
                log.info("card written to %s", card_out)
        log.info("dry run: %s folder %s not pushed and not changed; made for the upload: %s", staged.kind, folder,
                 ", ".join(staged.generated) or "nothing")
        return None
    return push_folder(folder, cfg.repo, cfg.private, cfg.eval_dir, cfg.license, cfg.commit_message, kind, cfg.card)
