"""What a model costs to train: FLOPs per token, memory under ZeRO-2, time and money for a budget.

FLOPs per trained token (forward + backward), the formula of Kaplan et al. 2020 and PaLM (App. B),
as nanoGPT and most MFU figures use it:

    flops_per_token = 6 * N_matmul + 12 * n_layer * d_model * seq_len

where ``N_matmul`` counts the parameters that take part in matrix multiplies: every parameter
except the position embeddings and the token embedding lookup, but with the output head
(vocab x d_model) counted once even when it is tied to the input embedding. The second term is
the attention score and value products (QK^T and AV), which grow with the context.
MFU = achieved FLOPs / peak dense bf16 FLOPs of the device (no sparsity).

Memory under ZeRO stage 2 with bf16 and fp32 master weights (Rajbhandari et al. 2020), per GPU:
bf16 weights 2N (replicated), then gradients 2N, fp32 master weights 4N and two Adam moments 8N
divided over the data-parallel ranks; activations per layer ~ 34 * seq * batch * d_model bytes
(Korthikanti et al. 2022, with SDPA/flash attention so no seq^2 term; much less with activation
checkpointing: 2 * seq * batch * d_model bytes per layer); and the logits, seq * batch * vocab * 6
bytes (bf16 logits and their fp32 copy for the loss).
"""

from __future__ import annotations

import dataclasses

from tonsai.model.build import context_length, count_parameters

# torch and transformers are imported inside ModelShape.from_config only (AutoModelForCausalLM: 2.4 s with
# torch on a 2-core machine): plan_run.py --help imports this module and must not pay them.

# peak dense bf16 tensor-core FLOPs per second, from the vendors' data sheets
GPU_PEAK_BF16 = {
    "h100": 989e12,        # H100 SXM
    "h100-pcie": 756e12,
    "h200": 989e12,
    "a100": 312e12,
    "l4": 121e12,
    "a10g": 125e12,
    "t4": 65e12,           # fp16 (no bf16)
}
GPU_MEMORY_GB = {"h100": 80, "h100-pcie": 80, "h200": 141, "a100": 80, "l4": 24, "a10g": 24, "t4": 16}


def gpu_key(device_name: str) -> str | None:
    """Map ``torch.cuda.get_device_name()`` to a key of :data:`GPU_PEAK_BF16`."""
    name = device_name.lower()
    for key in ("h200", "h100", "a100", "l4", "a10g", "t4"):
        if key in name:
            return "h100-pcie" if key == "h100" and "pcie" in name else key
    return None


@dataclasses.dataclass
class ModelShape:
    n_layer: int
    d_model: int
    vocab_size: int
    seq_len: int
    parameters: int            # all parameters, tied embeddings once
    position_parameters: int   # learned position embeddings (0 for RoPE)

    @classmethod
    def from_config(cls, config, seq_len: int | None = None) -> "ModelShape":
        """Shape of a transformers config, parameters counted on the meta device (no memory)."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        n = count_parameters(model)
        pos = sum(p.numel() for name, p in model.named_parameters() if "wpe" in name or "position" in name)
        d = getattr(config, "n_embd", None) or config.hidden_size
        layers = getattr(config, "n_layer", None) or config.num_hidden_layers
        return cls(layers, d, config.vocab_size, seq_len or context_length(config), n, pos)

    @property
    def matmul_parameters(self) -> int:
        """Parameters in matrix multiplies: the input embedding lookup is free, the head is not."""
        return self.parameters - self.position_parameters

    def flops_per_token(self) -> float:
        return 6 * self.matmul_parameters + 12 * self.n_layer * self.d_model * self.seq_len


def zero2_memory_gb(shape: ModelShape, micro_batch: int, world_size: int = 1,
                    activation_checkpointing: bool = False) -> dict[str, float]:
    """Estimated GPU memory per rank (GB, 1e9 bytes) under ZeRO-2; see the module docstring."""
    n = shape.parameters
    tokens = micro_batch * shape.seq_len
    per_layer = (2 if activation_checkpointing else 34) * tokens * shape.d_model
    parts = {
        "weights_bf16": 2 * n,
        "gradients_bf16": 2 * n / world_size,
        "master_fp32": 4 * n / world_size,
        "adam_moments_fp32": 8 * n / world_size,
        "activations": shape.n_layer * per_layer,
        "logits": tokens * shape.vocab_size * 6,
    }
    out = {k: v / 1e9 for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float, n_gpus: int = 1) -> float:
    return tokens_per_s * flops_per_token / (peak_flops * n_gpus)
