"""The prepare stage: raw Khmer and English text to a mixed, split DatasetDict on disk.

Per document: read -> normalize -> length filter -> script routing against the declared language
-> quality signals (U+FFFD, invalid Khmer clusters, legacy-font text) -> exact deduplication (across all sources and languages, first occurrence survives) ->
validation split (deterministic by hashed id, per source) -> character-weighted mixing of the
training part. Every document read is counted as kept or dropped with a reason in manifest.json.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import math
import random
from pathlib import Path

from tqdm.auto import tqdm

from tonsai.atomic import staged_dir
from tonsai.cli import StageError
from tonsai.data.filters import bad_quality, script_mismatch, too_short
from tonsai.data.mix import normalize_weights, plan_mixture
from tonsai.data.sources import Document, ReadStats, Source, iter_documents
from tonsai.manifest import file_sha256, write_manifest
from tonsai.text import RoutingThresholds, count_scripts, normalize

log = logging.getLogger(__name__)
STAGE = "prepare"
LANGS = ("km", "en")


@dataclasses.dataclass
class PrepareConfig:
    """Options of scripts/prepare_dataset.py."""

    output_dir: str = dataclasses.field(metadata={"help": "folder to write the DatasetDict and manifest.json into"})
    khmer: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "Khmer sources: .txt/.jsonl files, folders or globs", "metavar": "PATH"})
    english: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "English sources: .txt/.jsonl files, folders or globs", "metavar": "PATH"})
    khmer_weight: float = dataclasses.field(default=0.5, metadata={
        "help": "share of Khmer characters in the training mixture (normalized with --english-weight)"})
    english_weight: float = dataclasses.field(default=0.5, metadata={
        "help": "share of English characters in the training mixture"})
    doc_mode: str = dataclasses.field(default="line", metadata={
        "help": "how .txt files split into documents: one per line, or per blank-line-separated paragraph",
        "choices": ["line", "paragraph"]})
    text_column: str = dataclasses.field(default="text", metadata={"help": "text field of .jsonl records"})
    min_chars: int = dataclasses.field(default=20, metadata={
        "help": "drop documents with fewer non-space characters than this"})
    validation_fraction: float = dataclasses.field(default=0.05, metadata={
        "help": "fraction of each source's documents held out for validation"})
    min_validation_docs: int = dataclasses.field(default=2, metadata={
        "help": "hold out at least this many documents per source"})
    max_epochs: float = dataclasses.field(default=1.0, metadata={
        "help": "most passes over any language's training documents when mixing (>1 allows upsampling)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed for mixing and shuffling"})
    khmer_min_share: float = dataclasses.field(default=RoutingThresholds.khmer_min_share, metadata={
        "help": "route a document to Khmer when Khmer is at least this share of its letters"})
    khmer_min_chars: int = dataclasses.field(default=RoutingThresholds.khmer_min_chars, metadata={
        "help": "... and it has at least this many Khmer characters"})
    mixed_min_share: float = dataclasses.field(default=RoutingThresholds.mixed_min_share, metadata={
        "help": "below --khmer-min-share but at least this Khmer share: 'mixed' (dropped from both languages)"})
    latin_min_share: float = dataclasses.field(default=RoutingThresholds.latin_min_share, metadata={
        "help": "route to English when Latin letters are at least this share of the letters"})

    def __post_init__(self) -> None:
        if not self.khmer and not self.english:
            raise ValueError("give at least one source with --khmer or --english")
        normalize_weights(self.weights())  # raises on negative or all-zero weights
        if self.khmer and self.khmer_weight <= 0 or self.english and self.english_weight <= 0:
            raise ValueError("a language with sources needs a positive weight (--khmer-weight / --english-weight)")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}")
        if self.max_epochs <= 0:
            raise ValueError(f"--max-epochs must be positive, got {self.max_epochs}")
        if self.min_validation_docs < 1:
            raise ValueError("--min-validation-docs must be at least 1")
        for name in ("khmer_min_share", "mixed_min_share", "latin_min_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
        if self.mixed_min_share > self.khmer_min_share:
            raise ValueError("--mixed-min-share must not exceed --khmer-min-share")

    def thresholds(self) -> RoutingThresholds:
        return RoutingThresholds(self.khmer_min_share, self.khmer_min_chars, self.mixed_min_share,
                                 self.latin_min_share)

    def weights(self) -> dict[str, float]:
        w = {}
        if self.khmer:
            w["km"] = self.khmer_weight
        if self.english:
            w["en"] = self.english_weight
        return w

    def sources(self) -> list[Source]:
        return [Source(p, "km") for p in self.khmer] + [Source(p, "en") for p in self.english]


def _hash_key(doc_id: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{doc_id}".encode()).hexdigest()


def _validation_ids(docs: list[Document], fraction: float, min_docs: int) -> set[str]:
    """Ids of the documents held out from one source: those with the smallest id hashes.

    The choice depends only on the documents' ids, so it stays the same when mixing weights
    change. At least one document stays in training.
    """
    if len(docs) < 2:
        return set()
    n = min(len(docs) - 1, max(min_docs, math.ceil(fraction * len(docs))))
    ranked = sorted(docs, key=lambda d: _hash_key(d.id, 0))
    return {d.id for d in ranked[:n]}


def run_prepare(cfg: PrepareConfig) -> dict:
    """Run the prepare stage and return its manifest."""
    thresholds = cfg.thresholds()
    counts: dict[str, collections.Counter] = {}
    seen_hashes: set[str] = set()
    kept: dict[str, list[Document]] = collections.defaultdict(list)
    inputs = []
    for source in cfg.sources():
        c = counts.setdefault(source.name, collections.Counter())
        stats = ReadStats()
        files = source.files()
        inputs.append({"source": source.name, "lang": source.lang,
                       "files": [{"path": str(f), "sha256": file_sha256(f)} for f in files]})
        docs = iter_documents(source, stats, cfg.doc_mode, cfg.text_column)
        for doc in tqdm(docs, desc=f"read {source.name}", unit="doc", leave=False):
            c["read"] += 1
            doc.text = normalize(doc.text).strip()
            reason = (too_short(doc.text, cfg.min_chars)
                      or script_mismatch(count_scripts(doc.text), source.lang, thresholds)
                      or bad_quality(doc.text))
            if reason is None:
                h = hashlib.sha1(doc.text.encode("utf-8")).hexdigest()
                if h in seen_hashes:
                    reason = "duplicate"
                else:
                    seen_hashes.add(h)
            if reason:
                c[f"dropped:{reason}"] += 1
                continue
            c["kept"] += 1
            kept[source.name].append(doc)
        c["invalid_utf8_lines"] += stats.invalid_utf8_lines
        log.info("%s: read %d, kept %d", source.name, c["read"], c["kept"])

    train_pool: dict[str, list[Document]] = collections.defaultdict(list)
    validation: list[Document] = []
    for name, docs in kept.items():
        held = _validation_ids(docs, cfg.validation_fraction, cfg.min_validation_docs)
        for d in docs:
            (validation.append(d) if d.id in held else train_pool[d.lang].append(d))
        counts[name]["validation"] = len(held)
        counts[name]["train_pool"] = len(docs) - len(held)

    for lang in cfg.weights():
        if not train_pool.get(lang):
            raise StageError(
                f"no {lang} documents are left after filtering (see counts: "
                f"{ {k: dict(v) for k, v in counts.items() if k.startswith(lang)} }); "
                f"check the input files and --min-chars"
            )
    try:
        chosen, plans = plan_mixture(
            {lang: [len(d.text) for d in docs] for lang, docs in train_pool.items()},
            cfg.weights(), cfg.max_epochs, cfg.seed)
    except ValueError as e:
        raise StageError(str(e)) from e
    train = [train_pool[lang][i] for lang, idx in chosen.items() for i in idx]
    random.Random(cfg.seed).shuffle(train)
    for d in train:
        counts[d.source]["train_selected"] += 1

    total_chars = sum(p.selected_chars for p in plans.values())
    mixture = {
        lang: {
            "requested_share": p.weight,
            "realized_share": p.selected_chars / total_chars if total_chars else 0.0,
            "available_chars": p.available_chars,
            "selected_chars": p.selected_chars,
            "selected_docs": p.selected_docs,
            "epochs": round(p.epochs, 4),
        }
        for lang, p in plans.items()
    }
    val_counts = collections.Counter(d.lang for d in validation)
    for lang, m in mixture.items():
        log.info("%s: %.1f%% of training characters (requested %.1f%%), %d docs, %.2f epochs; %d validation docs",
                 lang, 100 * m["realized_share"], 100 * m["requested_share"], m["selected_docs"],
                 m["epochs"], val_counts[lang])

    import datasets  # slow import, only when writing

    def to_ds(docs: list[Document]) -> "datasets.Dataset":
        return datasets.Dataset.from_dict({
            "text": [d.text for d in docs], "lang": [d.lang for d in docs],
            "source": [d.source for d in docs], "id": [d.id for d in docs]})

    dd = datasets.DatasetDict({"train": to_ds(train), "validation": to_ds(validation)})
    with staged_dir(cfg.output_dir) as tmp:
        dd.save_to_disk(str(tmp / "dataset"))
        manifest = write_manifest(
            tmp, STAGE, cfg, inputs=inputs,
            counts={name: dict(c) for name, c in counts.items()},
            mixture=mixture,
            splits={"train": len(train), "validation": len(validation)},
            validation_docs_per_lang=dict(val_counts),
            mixing_unit="characters of normalized text",
        )
    log.info("wrote %s (train %d docs, validation %d docs)", cfg.output_dir, len(train), len(validation))
    return manifest


def load_prepared(dataset_dir: str | Path):
    """Load the DatasetDict written by :func:`run_prepare` (checks the manifest first)."""
    from tonsai.manifest import read_manifest
    import datasets

    manifest = read_manifest(dataset_dir, STAGE)
    return datasets.load_from_disk(str(Path(dataset_dir) / "dataset")), manifest
