"""torch layers that skip their random initialisation: every native module's weights come from a checkpoint.

Random-initialising SD v1.5's ~1 B parameters before overwriting them costs seconds, and building on the
meta device instead costs ~0.4 s of imports per process (torch's meta registrations). These subclasses
allocate (`torch.empty`) and stop there; `weights.load_strict` then assigns the checkpoint's tensors.
"""

from __future__ import annotations

from torch import nn


class Linear(nn.Linear):
    def reset_parameters(self) -> None:
        """Left uninitialised: the checkpoint's tensor is assigned next."""


class Conv2d(nn.Conv2d):
    def reset_parameters(self) -> None:
        """Left uninitialised: the checkpoint's tensor is assigned next."""


class GroupNorm(nn.GroupNorm):
    def reset_parameters(self) -> None:
        """Left uninitialised: the checkpoint's tensor is assigned next."""


class LayerNorm(nn.LayerNorm):
    def reset_parameters(self) -> None:
        """Left uninitialised: the checkpoint's tensor is assigned next."""


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        """Left uninitialised: the checkpoint's tensor is assigned next."""
