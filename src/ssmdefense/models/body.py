"""The classifier body shared by every sequence mixer.

    (B, L, D) -> encoder Linear(D, H) -> n_layers x Block -> mean over L -> Linear(H, n_classes)

    Block(x) = LayerNorm(x + dropout(Linear(dropout(AdS(GELU(mixer(x)))))))   (plain SSM mixers)
    Block(x) = LayerNorm(x + dropout(mixer(x)))        (gated mixers: AdS inside, before their out-projection)

``mixer`` is any module (B, L, H) -> (B, L, H) (S4D, ...); AdS is optional (models/ads.py).
"""

from collections.abc import Callable

import torch
from torch import nn

from .ads import AdaptiveScaling, check_ads
from .checks import check_dropout, check_int

NORMS = ("layer", "centre")


class CentreNorm(nn.Module):
    """LayerNorm without the division by the standard deviation: x − mean(x) over the features, then
    a learned scale and shift. The division is the layer certified bounds handle worst; dropping it
    is what the transformer-verification literature does to make normalisation boundable. Chosen
    with ``-m norm=centre``; the default stays ``layer``."""

    def __init__(self, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))  # (H)
        self.bias = nn.Parameter(torch.zeros(d_model))  # (H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B L H)
        return (x - x.mean(-1, keepdim=True)) * self.weight + self.bias  # (B L H)


def make_norm(d_model: int, norm: str) -> nn.Module:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    return nn.LayerNorm(d_model) if norm == "layer" else CentreNorm(d_model)


def make_ads(d_model: int, act: str | None) -> nn.Module:
    """An AdS module for ``act``, or Identity when ``act`` is None/'none'."""
    return AdaptiveScaling(d_model, act) if check_ads(act) else nn.Identity()


class Block(nn.Module):
    """One residual block around a sequence mixer.

    Plain SSM mixers (S4, S4D, DSS, S5): ``LayerNorm(x + dropout(Linear(dropout(AdS(GELU(mixer(x)))))))``.

    Mixers with their own gating and output projection (Mega, Mamba) set the class attribute
    ``has_output_projection = True`` and own an ``ads`` slot (``nn.Identity`` by default) that they
    apply right after the SSM output and before their output projection; the block then is
    ``LayerNorm(x + dropout(mixer(x)))`` and puts the AdS module into ``mixer.ads``. A mixer whose
    SSM runs wider than d_model (Mamba: expand * d_model) says so with ``ads_width``.
    """

    def __init__(
        self, mixer: nn.Module, d_model: int, dropout: float = 0.0, ads: str | None = None, norm: str = "layer"
    ):
        super().__init__()
        self.mixer = mixer
        self.norm = make_norm(d_model, norm)
        self.gated = bool(getattr(mixer, "has_output_projection", False))
        if self.gated:
            if not hasattr(mixer, "ads"):
                raise TypeError(f"{type(mixer).__name__} has an output projection but no 'ads' slot")
            mixer.ads = make_ads(self.ads_width, ads)
        else:
            self.activation = nn.GELU()
            self.ads = make_ads(d_model, ads)
            self.output_linear = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    @property
    def ads_width(self) -> int:
        return int(getattr(self.mixer, "ads_width", self.norm.normalized_shape[0]))

    @property
    def ads_module(self) -> nn.Module:
        return self.mixer.ads if self.gated else self.ads

    def set_ads(self, module: nn.Module) -> None:
        if self.gated:
            self.mixer.ads = module
        else:
            self.ads = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B L H)
        if self.gated:
            y = self.dropout(self.mixer(x))  # (B L H)
        else:
            y = self.activation(self.mixer(x))  # (B L H)
            y = self.dropout(self.ads(y))  # (B L H)
            y = self.dropout(self.output_linear(y))  # (B L H)
        return self.norm(x + y)  # (B L H)


class SequenceClassifier(nn.Module):
    """Sequence classifier body: float (B, L, D) -> logits (B, n_classes).

    Args:
        d_input: D, features per step.
        n_classes: number of classes.
        mixer: factory ``mixer(d_model) -> nn.Module`` building one layer's sequence mixer.
        d_model: H, hidden width.
        n_layers: number of blocks.
        dropout: dropout rate inside blocks.
        ads: None, "relu", "sigmoid" or "tanh": Adaptive Scaling in every block.
        norm: "layer" (LayerNorm, default) or "centre" (``CentreNorm``: no division, boundable).
    """

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        mixer: Callable[[int], nn.Module],
        d_model: int = 64,
        n_layers: int = 2,
        dropout: float = 0.0,
        ads: str | None = None,
        norm: str = "layer",
    ):
        super().__init__()
        for key, value, low in (
            ("d_input", d_input, 1),
            ("n_classes", n_classes, 2),
            ("d_model", d_model, 1),
            ("n_layers", n_layers, 1),
        ):
            check_int(key, value, low)
        check_dropout(dropout)
        self.d_input, self.n_classes, self.d_model = d_input, n_classes, d_model
        self.encoder = nn.Linear(d_input, d_model)
        make_norm(d_model, norm)  # a bad name fails before any mixer is built
        self.blocks = nn.ModuleList(Block(mixer(d_model), d_model, dropout, ads, norm) for _ in range(n_layers))
        self.head = nn.Linear(d_model, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step hidden states before pooling: (B, L, D) -> (B, L, H)."""
        if x.ndim != 3 or x.shape[-1] != self.d_input:
            raise ValueError(f"expected input (B, L, {self.d_input}); got {tuple(x.shape)}")
        h = self.encoder(x)  # (B L H)
        for block in self.blocks:
            h = block(h)  # (B L H)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B L D)
        return self.head(self.features(x).mean(dim=1))  # (B n_classes)

    @property
    def ads(self) -> str | None:
        first = self.blocks[0].ads_module
        return first.act_name if isinstance(first, AdaptiveScaling) else None

    def enable_ads(self, act: str) -> None:
        """Insert AdS modules (freshly initialised) into every block that has none."""
        act = check_ads(act)
        if act is None:
            raise ValueError("enable_ads needs an activation (relu, sigmoid or tanh)")
        current = self.ads
        if current is not None and current != act:
            raise ValueError(f"the model already has AdS with act={current!r}; cannot switch to {act!r}")
        device = self.head.weight.device
        dtype = self.head.weight.dtype
        for block in self.blocks:
            if not isinstance(block.ads_module, AdaptiveScaling):
                block.set_ads(AdaptiveScaling(block.ads_width, act).to(device=device, dtype=dtype))
