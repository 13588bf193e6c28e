"""The safety check stage (scripts/safety_check.py).

Generates an answer to every prompt of the safety prompt set with the model under test (or reads
generations from ``--generations``), flags them with the project's lexicon and optionally a
classifier, and writes report.json, report.md, report.html, generations.jsonl and manifest.json
into ``--output-dir`` (claimed and written by a rename at the end, :mod:`tonsai.folders`).

Exit codes (:func:`main`): 0 the check passed; :data:`EXIT_FAILED` (3) the report was written and
some language's flagged rate is above ``--max-flagged-rate``; 1 bad input (a message names the
file and what to do); 2 bad options.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from tonsai.atomic import staged_dir
from tonsai.cli import run_main
from tonsai.errors import StageError
from tonsai.eval.run import default_name, load_model
from tonsai.folders import claim_output
from tonsai.manifest import MANIFEST_NAME, file_sha256, read_manifest, write_manifest
from tonsai.safety.lexicon import load_lexicon
from tonsai.safety.prompts import load_generations, load_prompts
from tonsai.safety.report import SCHEMA, score, summarize_samples, verdict, write_report

# torch, and the modules that import torch and transformers (tonsai.safety.classifier, tonsai.safety.generate),
# are imported inside the functions that run a model: 2.4 s on a 2-core machine, which safety_check.py --help
# and a check of a --generations file without --classifier must not pay.

log = logging.getLogger(__name__)
STAGE = "safety"
EXIT_FAILED = 3
SHIPPED = Path("eval_suites") / "safety"


def shipped(name: str = "") -> str:
    """A path in eval_suites/safety/: in the working folder when it has one, else beside the package."""
    here = SHIPPED / name
    if here.exists():
        return str(here)
    return str(Path(__file__).resolve().parents[2] / SHIPPED / name)


@dataclasses.dataclass
class SafetyConfig:
    """Options of scripts/safety_check.py."""

    output_dir: str = dataclasses.field(metadata={
        "help": "folder to write report.json, report.md, report.html, generations.jsonl and manifest.json into"})
    max_flagged_rate: float = dataclasses.field(metadata={
        "help": "the check fails (exit 3) when any language has a larger share of flagged generations, "
                "e.g. 0.05; 0 fails on any flagged generation"})
    model_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "model to check: a run's final/, a checkpoint-N/ folder or any HF causal-LM folder"})
    generations: str | None = dataclasses.field(default=None, metadata={
        "help": "score these generations instead of generating (JSON lines with id and generation, e.g. an "
                "earlier check's generations.jsonl)"})
    prompts: str = dataclasses.field(default_factory=lambda: shipped("prompts.jsonl"), metadata={
        "help": "prompt set, JSON lines with id, lang, category, prompt"})
    lexicon: list[str] = dataclasses.field(default_factory=lambda: [shipped()], metadata={
        "help": "lexicon YAML files, or folders of lexicon_*.yaml", "metavar": "PATH"})
    classifier: str | None = dataclasses.field(default=None, metadata={
        "help": "also score with this Hugging Face sequence classifier (local folder or Hub id)"})
    classifier_label: str = dataclasses.field(default="toxic", metadata={
        "help": "the classifier's label that means toxic (name or index)"})
    classifier_threshold: float = dataclasses.field(default=0.5, metadata={
        "help": "flag a generation when the classifier's toxic probability is at least this"})
    chat: bool = dataclasses.field(default=False, metadata={
        "help": "send each prompt as a user turn through the tokenizer's chat template (instruction-tuned models)"})
    tokenizer_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "tokenizer folder, when --model-dir has none"})
    max_new_tokens: int = dataclasses.field(default=64, metadata={"help": "tokens generated per prompt, at most"})
    limit: int | None = dataclasses.field(default=None, metadata={
        "help": "at most this many prompts per language and category (quick looks; the report says so)"})
    name: str | None = dataclasses.field(default=None, metadata={
        "help": "label of the model in the report (default: the run folder's name)"})
    batch_size: int = dataclasses.field(default=8, metadata={"help": "prompts per generation batch"})
    device: str = dataclasses.field(default="auto", metadata={
        "help": "cuda when available, else cpu", "choices": ["auto", "cuda", "cpu"]})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "replace an earlier safety check in --output-dir (never anything else)"})

    def __post_init__(self) -> None:
        if (self.model_dir is None) == (self.generations is None):
            raise ValueError("give either --model-dir (generate and score) or --generations (score a file)")
        if self.chat and not self.model_dir:
            raise ValueError("--chat applies to generation: it needs --model-dir")
        if not (math.isfinite(self.max_flagged_rate) and 0 <= self.max_flagged_rate <= 1):
            raise ValueError(f"--max-flagged-rate must be between 0 and 1, got {self.max_flagged_rate}")
        if not 0 <= self.classifier_threshold <= 1:
            raise ValueError("--classifier-threshold must be between 0 and 1")
        for flag, v in (("--max-new-tokens", self.max_new_tokens), ("--batch-size", self.batch_size),
                        ("--limit", self.limit)):
            if v is not None and v < 1:
                raise ValueError(f"{flag} must be at least 1")
        if not self.lexicon:
            raise ValueError("--lexicon needs at least one file or folder")


def _select(prompts: list, limit: int | None) -> list:
    if limit is None:
        return prompts
    taken: dict = {}
    out = []
    for p in prompts:
        key = (p.lang, p.category)
        if taken.get(key, 0) < limit:
            taken[key] = taken.get(key, 0) + 1
            out.append(p)
    return out


def run_safety_check(cfg: SafetyConfig) -> dict:
    """Run the check into --output-dir and return the report (its ``passed`` says the verdict)."""
    inputs = [p for p in (cfg.model_dir, cfg.generations, cfg.prompts, cfg.tokenizer_dir, *cfg.lexicon) if p]
    if cfg.classifier and Path(cfg.classifier).exists():
        inputs.append(cfg.classifier)
    with claim_output(cfg.output_dir, STAGE, inputs=inputs, overwrite=cfg.overwrite):
        return _run(cfg)


def _check_languages_covered(prompts, lexicon, cfg: SafetyConfig) -> None:
    """A language with prompts but no lexicon file of its own would be scored by another language's
    list, find nearly nothing and pass: refuse, unless a classifier scores it too (then warn)."""
    have = {f.get("lang") for f in lexicon.files}
    missing = sorted({p.lang for p in prompts} - have)
    if not missing:
        return
    what = (f"no lexicon file for {', '.join(missing)} among --lexicon {' '.join(cfg.lexicon)} (each file's "
            f"`lang:` names its language)")
    if not cfg.classifier:
        raise StageError(f"{what}: its answers could not be flagged and would pass. Add a lexicon for it, or leave "
                         f"its prompts out of --prompts")
    log.warning("%s: only the classifier scores its answers", what)


def _run(cfg: SafetyConfig) -> dict:
    lexicon = load_lexicon(cfg.lexicon)  # bad inputs fail before the model is loaded
    every = load_prompts(cfg.prompts)
    prompts = _select(every, cfg.limit)
    _check_languages_covered(prompts, lexicon, cfg)
    generations = load_generations(cfg.generations, prompts, {p.id for p in every}) if cfg.generations else None
    device = _device(cfg.device) if (cfg.model_dir or cfg.classifier) else "cpu"
    classifier = None
    if cfg.classifier:
        from tonsai.safety.classifier import ToxicityClassifier

        classifier = ToxicityClassifier(cfg.classifier, cfg.classifier_label, cfg.classifier_threshold, device)
    model_manifest = None
    if generations is None:
        generations, model_manifest = _generate(cfg, prompts, device)
    samples = score(prompts, generations, lexicon, classifier)
    report = {"schema": SCHEMA, "name": cfg.name or _default_name(cfg),
              "model_dir": cfg.model_dir, "generations_file": cfg.generations, "chat": cfg.chat,
              "max_new_tokens": cfg.max_new_tokens if cfg.model_dir else None,
              "prompts": {"path": cfg.prompts, "sha256": file_sha256(cfg.prompts), "n": len(prompts),
                          "limit": cfg.limit},
              "lexicon": lexicon.files, "classifier": classifier.describe() if classifier else None,
              **summarize_samples(samples, cfg.max_flagged_rate)}
    with staged_dir(cfg.output_dir) as tmp:
        write_report(tmp, report, samples)
        write_manifest(tmp, STAGE, cfg, passed=report["passed"], overall=report["overall"],
                       languages={k: v["rate"] for k, v in report["languages"].items()},
                       model_manifest_created=model_manifest and model_manifest.get("created_utc"))
    (log.info if report["passed"] else log.error)("%s; report in %s", verdict(report),
                                                   Path(cfg.output_dir) / "report.md")
    return report


def _device(choice: str) -> str:
    import torch

    return choice if choice != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def _default_name(cfg: SafetyConfig) -> str:
    return default_name(Path(cfg.model_dir)) if cfg.model_dir else Path(cfg.generations).stem


def _generate(cfg: SafetyConfig, prompts: list, device: str) -> tuple[list[str], dict | None]:
    from tonsai.safety.generate import generate

    model_dir = Path(cfg.model_dir)
    model, tokenizer, _ = load_model(model_dir, cfg.tokenizer_dir, device)
    manifest = read_manifest(model_dir) if (model_dir / MANIFEST_NAME).is_file() else None
    tok_dir = Path(cfg.tokenizer_dir) if cfg.tokenizer_dir else model_dir
    try:
        gens = generate(model, tokenizer, prompts, chat=cfg.chat, tok_dir=tok_dir, max_new_tokens=cfg.max_new_tokens,
                        batch_size=cfg.batch_size, device=device)
    except ValueError as e:
        raise StageError(f"--model-dir {model_dir}: {e}") from e
    return gens, manifest


def main(cfg: SafetyConfig) -> int:
    """Run the check as a script does: 0 passed, 3 failed (report written), 1 bad input."""
    result: dict = {}
    rc = run_main(lambda: result.update(report=run_safety_check(cfg)))
    if rc == 0 and not result["report"]["passed"]:
        return EXIT_FAILED
    return rc
