"""Component analysis (Qi et al., NeurIPS 2024, "Exploring Adversarial Robustness of Deep State
Space Models"): how much each block component amplifies or damps an adversarial perturbation.

For every block of a ``SequenceClassifier`` body and each of its components, the clean and the
adversarial input are run through the model (eval mode, no gradients) and forward hooks record the
component's input ("before") and output ("after") hidden states. Two distances between the clean
(``h_c``) and adversarial (``h_a``) hidden states are measured at both ends:

    MSE = mean over batch, positions and features of (h_a - h_c)^2
    KL  = mean over batch and positions of KL(softmax(h_c) || softmax(h_a)),
          softmax over the feature (last) dimension, computed with log_softmax:
          KL = sum_f p_c,f (log p_c,f - log p_a,f)

and the relative change ``(after - before) / before`` (None when before == 0, e.g. x_adv == x_clean).
A positive relative change means the component amplifies the adversarial error, a negative one
that it damps it. Sums run over the whole data set (batched by ``batch_size``) and are divided once
at the end: the figures are over the set, not means of per-batch ratios. Accumulation is in float64.

Components and where they are hooked:

- plain mixers (S4, S4D, DSS, S5), block ``LayerNorm(x + Linear(AdS(GELU(mixer(x)))))``:
  ``mixer``: input x (the block input), output mixer(x);
  ``ads`` (only when AdS is on, i.e. not ``nn.Identity``): input GELU(mixer(x)), output AdS(...);
  ``output_linear``: the block's ``output_linear`` Linear, its input and output.
- gated mixers (``has_output_projection = True``: Mega, Mamba), block ``LayerNorm(x + mixer(x))``:
  ``mixer``: the whole mixer module, input x, output mixer(x) (Mega's is its residual update
  φ ⊙ (Ĥ - x));
  ``ads``: ``mixer.ads`` (when not ``nn.Identity``), input the SSM output, output AdS of it;
  ``output_linear``: the mixer's own output projection, the first of ``OUTPUT_PROJECTIONS`` it has:
  Mamba's ``out_proj`` (Linear(E, H), input AdS(y) ⊙ SiLU(z)), Mega's ``h_proj`` (U_h, Linear(E, H),
  input r ⊙ O; its output goes into Ĥ = SiLU(X'' W_h + (r ⊙ O) U_h + b_h), so it is the last
  projection before the gate, not the layer's final output). A gated mixer with none of these
  names gets no ``output_linear`` row.

Input and output of a projection may differ in width (Mamba: E -> H); MSE is per element and KL
per position either way. A module called more than once in a forward pass counts every call.
The hooks see what ``clf.model(x)`` computes on natural-shape input; ART preprocessing attached to
the classifier (if any) is not applied, so this describes the model itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SSMDefenseError
from ..models import SequenceClassifier
from ..modes import eval_mode
from ..validation import integer

COMPONENTS = ("mixer", "ads", "output_linear")
OUTPUT_PROJECTIONS = ("out_proj", "h_proj")  # gated mixers: Mamba, Mega


def find_body(clf) -> SequenceClassifier:
    """The ``SequenceClassifier`` inside ``clf``'s model; an ``SSMDefenseError`` for a model without one
    (a plugin's plain ``nn.Module``: it has no blocks of mixers to analyse)."""
    body = next((m for m in clf.model.modules() if isinstance(m, SequenceClassifier)), None)
    if body is None:
        raise SSMDefenseError(
            f"--analysis components needs a model built on SequenceClassifier (blocks of "
            f"sequence mixers); {type(clf.model).__name__} has none"
        )
    return body


def _components(body: SequenceClassifier) -> list[tuple[int, str, nn.Module]]:
    """(layer, component, module) for every hooked component, in block order."""
    out = []
    for i, block in enumerate(body.blocks):
        out.append((i, "mixer", block.mixer))
        if not isinstance(block.ads_module, nn.Identity):
            out.append((i, "ads", block.ads_module))
        if block.gated:
            proj = next(
                (
                    getattr(block.mixer, n)
                    for n in OUTPUT_PROJECTIONS
                    if isinstance(getattr(block.mixer, n, None), nn.Linear)
                ),
                None,
            )
        else:
            proj = block.output_linear
        if proj is not None:
            out.append((i, "output_linear", proj))
    return out


def _kl_sum(h_clean: torch.Tensor, h_adv: torch.Tensor) -> float:
    """Sum over all positions of KL(softmax(h_clean) || softmax(h_adv)) over the last dim."""
    log_p = F.log_softmax(h_clean.double(), dim=-1)  # (B L F)
    log_q = F.log_softmax(h_adv.double(), dim=-1)  # (B L F)
    return float((log_p.exp() * (log_p - log_q)).sum())


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError(f"{name} must be an array of inputs; got a scalar")
    return x


def component_analysis(clf, x_clean, x_adv, *, batch_size: int = 128) -> list[dict]:
    """KL and MSE between clean and adversarial hidden states before and after each block component.

    Args:
        clf: an ``SSMClassifier`` whose model contains a ``SequenceClassifier`` body.
        x_clean, x_adv: (N, *input_shape) clean and adversarial inputs in natural shape, row-aligned.
        batch_size: inputs per forward pass.

    Returns:
        One dict per (layer, component), in block order: ``{"layer", "component", "kl_before",
        "kl_after", "kl_relative_change", "mse_before", "mse_after", "mse_relative_change"}``;
        the relative changes are ``(after - before) / before``, or None when before == 0.
    """
    integer("batch_size", batch_size, 1)
    x_clean, x_adv = _as_array(x_clean, "x_clean"), _as_array(x_adv, "x_adv")
    if x_clean.shape != x_adv.shape:
        raise ValueError(f"x_clean and x_adv must have the same shape; got {x_clean.shape} and {x_adv.shape}")
    if len(x_clean) == 0:
        raise ValueError("component analysis needs at least one input; got none")
    expected = tuple(clf.input_shape)
    if tuple(x_clean.shape[1:]) != expected:
        raise ValueError(f"expected inputs of shape (N, {', '.join(map(str, expected))}); got {x_clean.shape}")
    components = _components(find_body(clf))
    names = [(i, c) for i, c, _ in components]
    # per component: sums of KL / squared error and their counts (positions / elements), before and after
    sums = {key: {"kl": [0.0, 0.0], "kl_n": [0, 0], "se": [0.0, 0.0], "se_n": [0, 0]} for key in names}
    captured: dict = {}

    def make_hook(key):
        def hook(module, inputs, output):
            captured.setdefault(key, []).append((inputs[0].detach(), output.detach()))

        return hook

    model = clf.model
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    handles = [module.register_forward_hook(make_hook((i, c))) for i, c, module in components]
    try:
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(x_clean), batch_size):
                runs = []
                for x in (x_clean, x_adv):
                    captured.clear()
                    model(torch.as_tensor(x[start : start + batch_size], dtype=dtype, device=clf.device))
                    runs.append(dict(captured))
                clean, adv = runs
                for key in names:
                    if len(clean.get(key, [])) != len(adv.get(key, [])):
                        raise RuntimeError(
                            f"component {key} ran a different number of times on clean and adversarial input"
                        )
                    for (in_c, out_c), (in_a, out_a) in zip(clean.get(key, []), adv.get(key, [])):
                        s = sums[key]
                        for side, (h_c, h_a) in enumerate(((in_c, in_a), (out_c, out_a))):
                            s["kl"][side] += _kl_sum(h_c, h_a)
                            s["kl_n"][side] += h_c.numel() // max(h_c.shape[-1], 1)  # batch x positions
                            s["se"][side] += float(((h_a.double() - h_c.double()) ** 2).sum())  # (B L F) summed
                            s["se_n"][side] += h_c.numel()
    finally:
        for h in handles:
            h.remove()

    rows = []
    for i, c in names:
        s = sums[(i, c)]
        row = {"layer": i, "component": c}
        for metric, total, count in (("kl", "kl", "kl_n"), ("mse", "se", "se_n")):
            before, after = (s[total][k] / s[count][k] if s[count][k] else 0.0 for k in (0, 1))
            row[f"{metric}_before"], row[f"{metric}_after"] = before, after
            row[f"{metric}_relative_change"] = (after - before) / before if before != 0 else None
        rows.append(row)
    return rows


def analyse_components(clf, splits: dict, attack, *, batch_size: int = 128) -> dict:
    """Component analysis on each split under ``attack``.

    Args:
        clf: the classifier under analysis.
        splits: ``{name: (x, y)}``, e.g. ``{"train": (x_train, y_train), "test": (x_test, y_test)}``.
        attack: an ART evasion attack on ``clf``; ``x_adv = attack.generate(x, y)`` per split.
        batch_size: inputs per forward pass of the analysis.

    Returns:
        ``{name: rows}`` with rows as ``component_analysis`` returns them.
    """
    if not isinstance(splits, dict) or not splits:
        raise ValueError("splits must be a non-empty dict {name: (x, y)}")
    out = {}
    for name, pair in splits.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"split {name!r} must be a pair (x, y)")
        x, y = _as_array(pair[0], f"{name} x"), np.asarray(pair[1])
        if len(x) == 0:
            raise ValueError(f"split {name!r} is empty")
        if len(y) != len(x):
            raise ValueError(f"split {name!r} has {len(x)} inputs but {len(y)} labels")
        x_adv = attack.generate(x, y)
        out[name] = component_analysis(clf, x, x_adv, batch_size=batch_size)
    return out


def _num(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def _change(v) -> str:
    return "—" if v is None else f"{100 * v:+.1f}%"


def render_components_markdown(analysis: dict) -> str:
    """A "## Component analysis" markdown section: one table over all splits and an explanation."""
    lines = [
        "## Component analysis",
        "",
        (
            "Distance between clean and adversarial hidden states at each block component's input (before) and "
            "output (after): KL is the mean over positions of KL(softmax(clean) || softmax(adversarial)) over "
            "the features, MSE the mean squared difference. The relative change is (after - before) / before: "
            "positive means the component amplifies the adversarial perturbation, negative that it damps it "
            "(Qi et al., NeurIPS 2024). For Mega and Mamba, `mixer` is the whole gated layer, `ads` the AdS "
            "module inside it and `output_linear` its own output projection."
        ),
        "",
    ]
    rows = [(split, r) for split, split_rows in (analysis or {}).items() for r in split_rows]
    if not rows:
        return "\n".join(lines + ["No components were analysed."]) + "\n"
    lines += [
        "| split | layer | component | KL before | KL after | KL change | MSE before | MSE after | MSE change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split, r in rows:
        lines.append(
            f"| {split} | {r['layer']} | {r['component']} | {_num(r['kl_before'])} | {_num(r['kl_after'])} "
            f"| {_change(r['kl_relative_change'])} | {_num(r['mse_before'])} | {_num(r['mse_after'])} "
            f"| {_change(r['mse_relative_change'])} |"
        )
    return "\n".join(lines) + "\n"


def plot_components(analysis: dict, path) -> bool:
    """Grouped bars of the relative change per (layer, component), one bar per split; panels KL and MSE.

    Returns False (and writes nothing) when there is no relative change to plot."""
    splits = [s for s, rows in (analysis or {}).items() if rows]
    groups = []
    for s in splits:
        for r in analysis[s]:
            if (r["layer"], r["component"]) not in groups:
                groups.append((r["layer"], r["component"]))
    values = {
        (s, m): {(r["layer"], r["component"]): r[f"{m}_relative_change"] for r in analysis[s]}
        for s in splits
        for m in ("kl", "mse")
    }
    if not any(v is not None for d in values.values() for v in d.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(groups) + 2), 3.5))
    pos = np.arange(len(groups))
    width = 0.8 / len(splits)
    for ax, metric in zip(axes, ("kl", "mse")):
        for j, s in enumerate(splits):
            v = [values[(s, metric)].get(g) for g in groups]
            ax.bar(pos + (j - (len(splits) - 1) / 2) * width, [np.nan if x is None else x for x in v], width, label=s)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(pos)
        ax.set_xticklabels([f"L{i} {c}" for i, c in groups], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("relative change (after - before) / before")
        ax.set_title(f"{metric.upper()}: > 0 amplifies, < 0 damps", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
