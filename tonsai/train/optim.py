"""Muon for the hidden matrices, AdamW for everything else, as one optimizer the Trainer can drive.

Muon (``torch.optim.Muon``) orthogonalizes the momentum of a 2-D weight matrix with a few
Newton-Schulz iterations. It is defined for the matrices inside the transformer blocks only:
embeddings (token and position), the output head (tied to the token embedding in GPT-2), biases
and norm gains keep AdamW. Both halves follow the same learning-rate schedule: Muon runs with
``adjust_lr_fn="match_rms_adamw"``, which scales its update to AdamW's RMS so that one
``--learning-rate`` suits both.

The two inner optimizers share this wrapper's param-group dicts and state, so the LR scheduler,
gradient clipping, ``state_dict()`` and exact resume see one ordinary optimizer.

Muon needs the whole matrix: DeepSpeed ZeRO-2 hands a client optimizer flattened 1-D partitions,
so ``--optimizer muon`` runs without ``--deepspeed`` (single process or torchrun DDP; a 0.5B model
with its optimizer state fits one H100 without ZeRO).
"""

from __future__ import annotations

import torch

MUON_FLAG = "_tonsai_use_muon"


def tag_muon_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Mark each parameter for Muon or AdamW; returns (Muon parameters, AdamW parameters) counted by element."""
    excluded = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            excluded.update(id(p) for p in module.parameters(recurse=False))
    for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
        if emb is not None:
            excluded.update(id(p) for p in emb.parameters(recurse=False))
    counts = [0, 0]
    for p in model.parameters():
        use = p.ndim == 2 and id(p) not in excluded
        setattr(p, MUON_FLAG, use)
        counts[0 if use else 1] += p.numel()
    return counts[0], counts[1]


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer over Muon groups (tagged 2-D hidden matrices) and AdamW groups (the rest).

    ``params`` are parameters or param groups (the Trainer passes its weight-decay groups); each
    group is split in two by the tag that :func:`tag_muon_parameters` set.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, betas=(0.9, 0.95), eps: float = 1e-8,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5):
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        muon_groups, adam_groups = [], []
        for g in groups:
            ps = [p for p in g["params"]]
            untagged = [p for p in ps if not hasattr(p, MUON_FLAG)]
            if untagged:
                raise ValueError(f"{len(untagged)} parameters are not tagged for Muon or AdamW; call "
                                 "tag_muon_parameters(model) before building the optimizer")
            extra = {k: v for k, v in g.items() if k != "params"}
            m = [p for p in ps if getattr(p, MUON_FLAG)]
            a = [p for p in ps if not getattr(p, MUON_FLAG)]
            if m:
                muon_groups.append({**extra, "params": m, "use_muon": True})
            if a:
                adam_groups.append({**extra, "params": a, "use_muon": False})
        self._muon = torch.optim.Muon(muon_groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov, ns_steps=ns_steps,
                                      adjust_lr_fn="match_rms_adamw") if muon_groups else None
        self._adam = torch.optim.AdamW(adam_groups, lr=lr, weight_decay=weight_decay, betas=betas,
                                       eps=eps) if adam_groups else None
        inner_groups = (self._muon.param_groups if self._muon else []) + (self._adam.param_groups if self._adam else [])
        # the inner optimizers have filled in their defaults; this wrapper keeps the very same dicts
        super().__init__(inner_groups, defaults={"lr": lr, "weight_decay": weight_decay})
        self._rebind()

    def _rebind(self) -> None:
        for inner, use in ((self._muon, True), (self._adam, False)):
            if inner is not None:
                inner.param_groups = [g for g in self.param_groups if g["use_muon"] is use]
                inner.state = self.state

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._rebind()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for inner in (self._muon, self._adam):
            if inner is not None:
                inner.step()
        return loss
