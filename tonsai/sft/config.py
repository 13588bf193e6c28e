"""The typed config of the instruction-tuning stage (scripts/train_sft.py)."""

from __future__ import annotations

import dataclasses

from tonsai.train.config import TrainerOptions, check_trainer_options

# in an SFT run folder from its start: what its checkpoints were trained on (a resume must match it)
# and its base model's evaluation window (eval_model.py scores a checkpoint-N with it)
FINGERPRINT = "sft_run.json"

METHODS = ("full", "lora")
DEFAULT_LEARNING_RATE = {"full": 5e-5, "lora": 2e-4}  # LoRA's few new weights take a larger step


@dataclasses.dataclass(kw_only=True)
class SftConfig(TrainerOptions):
    """Options of scripts/train_sft.py."""

    model_dir: str = dataclasses.field(metadata={
        "help": "the model to tune: a tonsai run's final/ folder or any Hugging Face causal-LM folder"})
    data: list[str] = dataclasses.field(metadata={
        "help": "instruction data, PATH or PATH=WEIGHT each: JSON lines with chat 'messages' "
                "(role/content), ShareGPT or instruction/input/output records (files, folders, globs), or "
                "hf:OWNER/NAME[:CONFIG[:SPLIT]] from the Hub", "metavar": "PATH[=WEIGHT]"})
    output_dir: str = dataclasses.field(metadata={
        "help": "run folder: checkpoints, metrics.jsonl, final/ (a plain model folder, LoRA merged), "
                "adapter/ (with --method lora), manifest.json"})
    tokenizer_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "tokenizer folder (default: --model-dir's own); the chat template and role markers are added "
                "to the copy saved in final/"})
    method: str = dataclasses.field(default="full", metadata={
        "help": "full: every weight trains; lora: low-rank adapters (peft) on every linear layer, plus the "
                "embedding rows of the role markers", "choices": list(METHODS)})
    lora_rank: int = dataclasses.field(default=16, metadata={"help": "with --method lora: the adapters' rank r"})
    lora_alpha: float = dataclasses.field(default=32.0, metadata={
        "help": "with --method lora: scale alpha (the update is alpha/r times the low-rank product)"})
    lora_dropout: float = dataclasses.field(default=0.05, metadata={"help": "with --method lora: adapter dropout"})
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: ["all-linear"], metadata={
        "help": "with --method lora: module names to adapt, or all-linear (every linear layer but the head)"})
    resume_from: str | None = dataclasses.field(default=None, metadata={
        "help": "'auto' (the newest checkpoint of --output-dir that verifies) or a checkpoint folder of this run: "
                "weights, optimizer, schedule and data position. The model to tune is --model-dir"})
    block_size: int = dataclasses.field(default=1024, metadata={
        "help": "tokens per packed training sequence (at most the model's context); a longer conversation is "
                "dropped and counted"})
    epochs: float = dataclasses.field(default=3.0, metadata={
        "help": "passes over the training conversations (the steps follow; --max-steps overrides)"})
    max_steps: int | None = dataclasses.field(default=None, metadata={
        "help": "optimizer steps to train for (default: what --epochs needs)"})
    gradient_accumulation: int = dataclasses.field(default=1, metadata={"help": "micro-batches per optimizer step"})
    khmer_share: float | None = dataclasses.field(default=None, metadata={
        "help": "Khmer conversations as this share of the Khmer and English training conversations, after the "
                "source weights (e.g. 0.5); default: as the weights give"})
    validation_fraction: float = dataclasses.field(default=0.05, metadata={
        "help": "share of each language's conversations held out for validation (at least one each)"})
    learning_rate: float | None = dataclasses.field(default=None, metadata={
        "help": f"peak learning rate (default: {DEFAULT_LEARNING_RATE['full']:g} full, "
                f"{DEFAULT_LEARNING_RATE['lora']:g} LoRA)"})
    warmup: float = dataclasses.field(default=0.03, metadata={
        "help": "warmup: a fraction of the steps if < 1, else a number of steps"})
    weight_decay: float = dataclasses.field(default=0.0, metadata={"help": "AdamW weight decay"})
    eval_steps: int = dataclasses.field(default=50, metadata={"help": "per-language validation every this many steps"})
    save_steps: int = dataclasses.field(default=100, metadata={"help": "write a checkpoint every this many steps"})

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("--data is required: at least one instruction file or hf: dataset")
        check_trainer_options(self, positive=("gradient_accumulation", "max_steps", "lora_rank"))
        if self.block_size < 16:
            raise ValueError(f"--block-size must be at least 16, got {self.block_size}")
        if not self.epochs > 0:
            raise ValueError(f"--epochs must be positive, got {self.epochs}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}")
        if self.khmer_share is not None and not 0.0 < self.khmer_share < 1.0:
            raise ValueError(f"--khmer-share must be between 0 and 1 (exclusive), got {self.khmer_share}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.method != "lora":
            fields = {f.name: f for f in dataclasses.fields(self)}
            set_ = [f"--{n.replace('_', '-')}" for n in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")
                    if getattr(self, n) != (fields[n].default_factory() if fields[n].default_factory
                                            is not dataclasses.MISSING else fields[n].default)]
            if set_:
                raise ValueError(f"{' '.join(set_)} apply only with --method lora (this run: --method "
                                 f"{self.method}); add --method lora, or leave them out")
        if self.resume_from not in (None, "auto") and not self.resume_from.strip():
            raise ValueError("--resume-from: give 'auto' or a checkpoint folder")

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.method]
