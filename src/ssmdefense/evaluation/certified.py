"""The ``certified`` sections of an evaluation (``ssmdefense evaluate --certify``) in report.md and
``plots/certified_vs_empirical.png``: each certified accuracy beside the empirical one on the same
samples, and a ``VIOLATION`` line wherever a certificate claims more than an attack left."""

from __future__ import annotations

from pathlib import Path

from .plots import accuracy_axes, eps_axis, save_accuracy_plot


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def certified_sections(report: dict, k: str) -> dict[str, dict]:
    """Checkpoint ``k``'s ``{method: section}`` as evaluate writes it (empty when it certified nothing;
    a training run's single ``{"method": "ibp", ...}`` summary is not one)."""
    found = report.get(k, {}).get("certified") or {}
    return {m: s for m, s in found.items() if isinstance(s, dict) and "curve" in s}


def violation_lines(report: dict, ckpts: list[str]) -> list[str]:
    """One line starting with ``VIOLATION`` per method whose certificate exceeds the empirical accuracy
    (bounds) or that SmoothAdv confidently breaks (smoothing); none when all hold."""
    lines = []
    for k in ckpts:
        for m, s in certified_sections(report, k).items():
            if not s.get("violation"):
                continue
            if m == "smoothing":
                lines.append(
                    f"VIOLATION: {k} {m}: SmoothAdv confidently flips samples {s.get('violations')} inside "
                    "their certified L2 radius. A certificate is a lower bound: the certificate or the attack is wrong."
                )
                continue
            over = [p for p in s["curve"] if p["certified_accuracy"] > p["empirical_accuracy"]]
            lines.append(
                f"VIOLATION: {k} {m} certifies more than the attacks leave on the same samples ("
                + ", ".join(
                    f"eps {p['eps']:g}: {_pct(p['certified_accuracy'])} > {_pct(p['empirical_accuracy'])}" for p in over
                )
                + "). A certificate is a lower bound: the bound or the evaluation is wrong."
            )
    return lines


def render_certified(report: dict, ckpts: list[str]) -> list[str]:
    """report.md's "Certified" section: method, ball, certified and empirical accuracy per row."""
    rows = [(k, m, s) for k in ckpts for m, s in certified_sections(report, k).items()]
    if not rows:
        return []
    lines = [
        "",
        f"## Certified accuracy on the first {rows[0][2]['samples']} evaluated samples",
        "",
        "A certified accuracy is a lower bound that holds against every attack in its ball; the empirical one "
        "(same samples, same ball) is an upper bound, so the first can never exceed the second. Bound methods "
        "certify the model in the L-inf ball, beside the per-sample worst case over the attacks named; "
        "smoothing certifies the smoothed classifier g in an L2 ball, beside SmoothAdv on g (the model's L-inf "
        "attacks bound neither g nor the L2 ball).",
        "",
        "| checkpoint | method | ball | certified | empirical (same samples) |",
        "|---|---|---|---|---|",
    ]
    for k, m, s in rows:
        lines += _smoothing_rows(k, s) if m == "smoothing" else _bound_rows(k, m, s)
    violations = violation_lines(report, ckpts)
    return lines + ["", *violations] if violations else lines + ["", "No violation: every certificate holds."]


def _bound_rows(k: str, m: str, s: dict) -> list[str]:
    """A bound method's rows: one per eps of its curve."""
    attacks = ", ".join(s.get("empirical_attacks", []))
    return [
        f"| {k} | {m} | L-inf eps {p['eps']:g} | {_pct(p['certified_accuracy'])} | "
        f"{_pct(p.get('empirical_accuracy'))} ({attacks}) |"
        for p in s["curve"]
    ]


def _smoothing_rows(k: str, s: dict) -> list[str]:
    """Smoothing's rows: one per radius SmoothAdv attacked (without that check: per curve radius)."""
    ball = f"of g (σ {s['sigma']:g}, n {s['n']})"
    checked = s.get("attack_check") or []
    if not checked:
        return [
            f"| {k} | smoothing | L2 radius {p['radius']:.3g} {ball} | {_pct(p['certified_accuracy'])} | — |"
            for p in s["curve"]
        ]
    return [
        f"| {k} | smoothing | L2 radius {c['radius']:.3g} {ball} | {_pct(c['certified_accuracy'])} | "
        f"{_pct(c['attacked_accuracy'])} (SmoothAdv on g) |"
        for c in checked
    ]


def plot_certified(report: dict, ckpts: list[str], path: Path) -> bool:
    """Certified accuracy against eps per checkpoint and bound method (solid), the empirical accuracy on
    the same samples (dashed) and the evaluation's lowest attack accuracy over its eps list on all its
    samples (dotted), a colour per checkpoint; False (no file) when no bound method was certified."""
    bounds = {k: {m: s for m, s in certified_sections(report, k).items() if m != "smoothing"} for k in ckpts}
    bounds = {k: sections for k, sections in bounds.items() if sections}
    if not bounds:
        return False

    plt, fig, ax = accuracy_axes()
    for i, (k, sections) in enumerate(bounds.items()):
        colour = f"C{i}"
        for marker, (m, s) in zip("os^vD", sections.items()):
            eps, certified = [p["eps"] for p in s["curve"]], [p["certified_accuracy"] for p in s["curve"]]
            ax.plot(eps, certified, "-", marker=marker, color=colour, label=f"{k} certified by {m}")
        curve = next(iter(sections.values()))["curve"]  # every bound method: the same eps, the same attacks
        empirical = [p["empirical_accuracy"] for p in curve]
        ax.plot([p["eps"] for p in curve], empirical, "x--", color=colour, label=f"{k} attacked, same samples")
        swept = _lowest(report[k].get("curve") or [])
        if swept:
            ax.plot(*zip(*swept), ":", color=colour, label=f"{k} attacked, all samples")
    eps_axis(ax)
    return save_accuracy_plot(plt, fig, ax, path, "eps (L-inf)", "Certified vs empirical accuracy")


def _lowest(curve: list[dict]) -> list[tuple[float, float]]:
    """(eps, the lowest accuracy over the attacks there) along an evaluation's eps curve."""
    return [(p["eps"], min(v for key, v in p.items() if key != "eps")) for p in curve if len(p) > 1]
