"""Adaptive Scaling (AdS), Qi et al., NeurIPS 2024: ``AdS(y) = act(W y) * y``.

``W`` is a bias-free Linear(H, H) and ``act`` one of relu, sigmoid, tanh. It sits right after the
SSM mixer output (after ``+ D*u``; in the S4D block after its GELU) and before the block's output
projection, rescaling each channel by an input-dependent factor.
"""

import torch
from torch import nn

ADS_ACTIVATIONS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


def check_ads(act):
    """Normalise an ``ads`` argument: None/'none' -> None, else one of ADS_ACTIVATIONS."""
    if act is None or act == "none":
        return None
    if not isinstance(act, str) or act not in ADS_ACTIVATIONS:
        raise ValueError(f"ads must be one of none, {', '.join(ADS_ACTIVATIONS)}; got {act!r}")
    return act


class AdaptiveScaling(nn.Module):
    def __init__(self, d_model: int, act: str = "relu"):
        super().__init__()
        self.act_name = check_ads(act)
        if self.act_name is None:
            raise ValueError("AdaptiveScaling needs an activation (relu, sigmoid or tanh)")
        self.act = ADS_ACTIVATIONS[self.act_name]
        self.W = nn.Linear(d_model, d_model, bias=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # y: (B L H)
        return self.act(self.W(y)) * y  # (B L H)

    def extra_repr(self) -> str:
        return f"act={self.act_name}"
