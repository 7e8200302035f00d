"""``ssmdefense compare``: one table over finished run directories, RobustBench-style.

Each run gives its figures at the best checkpoint (an evaluation directory: its one checkpoint):
clean, PGD-10, AutoAttack (the worst case of the final evaluation's AutoAttack), certified (where
certified), best minus last PGD-10 (robust overfitting) and seconds. Runs whose settings differ only
by seed form one row, each figure the mean ± sd over the seeds (sample sd). Rows are sorted by the
robust figure: AutoAttack where the row has it, else PGD-10. ``plot_curves`` overlays every row's
PGD-10 accuracy against eps.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from ..errors import SSMDefenseError
from .templating import figure_uri, render, write_atomically

# The settings that make an experiment: runs agreeing on all of them differ only by seed.
EXPERIMENT = (
    "model",
    "dataset",
    "defense",
    "eps",
    "epochs",
    "sequence",
    "model_params",
    "sequence_params",
    "dataset_params",
    "defense_params",
    "select_on",
    "preset",
)
FIGURES = ("clean", "pgd-10", "autoattack", "certified", "best-last", "seconds")
HEADERS = {
    "clean": "clean",
    "pgd-10": "PGD-10",
    "autoattack": "AutoAttack",
    "certified": "certified",
    "best-last": "best − last PGD-10",
    "seconds": "seconds",
}


def load_run(directory) -> dict:
    """One run directory's settings and figures; an ``SSMDefenseError`` naming it when it has no
    readable report.json."""
    d = Path(directory)
    path = d / "report.json"
    if not path.is_file():
        raise SSMDefenseError(f"no report.json in {d}: not a finished run directory")
    report = _read_json(path)
    config = _read_json(d / "config.json") if (d / "config.json").is_file() else report.get("config", {})
    return {"run": str(d), "config": config, "figures": run_figures(report, config), "curve": _curve(report)}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SSMDefenseError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SSMDefenseError(f"{path} holds no JSON object")
    return data


def _checkpoint(report: dict) -> dict:
    """The checkpoint a run is quoted by: best, else an evaluation's single checkpoint."""
    return report.get("best") or report.get("checkpoint") or {}


def run_figures(report: dict, config: dict) -> dict:
    """``{figure: value or None}`` for FIGURES, accuracies as fractions."""
    r = _checkpoint(report)
    robust = r.get("robust_accuracy") or {}
    aa = r.get("autoattack") or {}
    last = (report.get("last") or {}).get("robust_accuracy", {}).get("pgd-10")
    gap = robust["pgd-10"] - last if last is not None and robust.get("pgd-10") is not None else None
    return {
        "clean": r.get("clean_accuracy"),
        "pgd-10": robust.get("pgd-10"),
        "autoattack": aa.get("worst_case", robust.get("autoattack")),
        "certified": certified_figure(r, config.get("eps")),
        "best-last": gap,
        "seconds": (report.get("timing") or {}).get("total_seconds"),
    }


def certified_figure(r: dict, eps) -> float | None:
    """A checkpoint's certified accuracy at the run's eps: the training's ``ibp`` summary or, from an
    evaluation's certify sections, the highest bound method's figure at that eps."""
    certified = r.get("certified") or {}
    if "certified_accuracy" in certified:
        return certified["certified_accuracy"]
    found = [
        p["certified_accuracy"]
        for s in certified.values()
        if isinstance(s, dict)
        for p in s.get("curve") or []
        if "eps" in p and eps is not None and abs(p["eps"] - eps) < 1e-12
    ]
    return max(found) if found else None


def _curve(report: dict) -> dict[float, float]:
    """``{eps: PGD-10 accuracy}`` along the quoted checkpoint's eps curve."""
    return {p["eps"]: p["pgd-10"] for p in _checkpoint(report).get("curve") or [] if "pgd-10" in p}


def group_runs(runs: list[dict]) -> list[dict]:
    """Runs agreeing on EXPERIMENT as rows: settings, seeds, runs, ``{figure: {"mean", "sd", "n"}}``
    and the mean curve, sorted by the robust figure (AutoAttack, else PGD-10), highest first."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        key = json.dumps({k: run["config"].get(k) for k in EXPERIMENT}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
    rows = [_row(sorted(members, key=lambda m: str(m["config"].get("seed")))) for members in groups.values()]
    return sorted(rows, key=lambda row: -_robust(row) if _robust(row) is not None else float("inf"))


def _row(members: list[dict]) -> dict:
    config = members[0]["config"]
    figures = {f: summary([m["figures"][f] for m in members]) for f in FIGURES}
    shared = set.intersection(*(set(m["curve"]) for m in members))
    return {
        **{k: config.get(k) for k in ("model", "dataset", "defense", "eps", "epochs")},
        "seeds": [m["config"].get("seed") for m in members],
        "runs": [m["run"] for m in members],
        "figures": figures,
        "curve": [{"eps": e, **summary([m["curve"][e] for m in members])} for e in sorted(shared)],
    }


def summary(values: list) -> dict | None:
    """Mean, sample sd (0 for one value) and count of the values that are not None; None if none are."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def _robust(row: dict) -> float | None:
    figure = row["figures"]["autoattack"] or row["figures"]["pgd-10"]
    return figure["mean"] if figure else None


def compare_runs(directories) -> list[dict]:
    """The rows of ``ssmdefense compare`` over run directories (at least one)."""
    if not directories:
        raise SSMDefenseError("no runs to compare: give one or more run directories")
    return group_runs([load_run(d) for d in directories])


def cell(figure: str, s: dict | None) -> str:
    """A figure as the table shows it: ``57.0%`` for one run, ``57.0 ± 1.2%`` over seeds."""
    if s is None:
        return "—"
    spread = s["n"] > 1
    if figure == "seconds":
        return f"{s['mean']:.0f} ± {s['sd']:.0f}" if spread else f"{s['mean']:.0f}"
    if figure == "best-last":
        return f"{100 * s['mean']:+.1f} ± {100 * s['sd']:.1f} pts" if spread else f"{100 * s['mean']:+.1f} pts"
    return f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}%" if spread else f"{100 * s['mean']:.1f}%"


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the comparison: one row per experiment, figures at the best checkpoint."""
    header = ["model", "dataset", "defense", "eps", "seeds", *(HEADERS[f] for f in FIGURES)]
    cells = [
        [
            *(str(row[k]) if row[k] is not None else "—" for k in ("model", "dataset", "defense")),
            f"{row['eps']:g}" if isinstance(row["eps"], int | float) else "—",
            ", ".join(str(s) for s in row["seeds"]),
            *(cell(f, row["figures"][f]) for f in FIGURES),
        ]
        for row in rows
    ]
    return header, cells


def render_markdown(rows: list[dict]) -> str:
    """The comparison as a Markdown table (figures at the best checkpoint, mean ± sd over seeds)."""
    header, cells = table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict]) -> str | None:
    """PGD-10 accuracy against eps, one line per row (mean over seeds, ± sd shaded) and one panel per
    dataset (their eps scales differ), as a PNG data URI; None when no run recorded a curve."""
    drawn = [row for row in rows if len(row["curve"]) > 1]
    if not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(str(row["dataset"]) for row in drawn))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for row in (r for r in drawn if str(r["dataset"]) == dataset):
            _plot_row(ax, row)
        ax.set(xlabel="eps (L-inf)", ylabel="PGD-10 accuracy", ylim=(0, 1), title=f"Robust accuracy vs eps: {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_uri(fig)


def _plot_row(ax, row: dict) -> None:
    """One row's mean curve and its ± sd band."""
    eps = np.array([p["eps"] for p in row["curve"]])  # (E)
    mean = np.array([p["mean"] for p in row["curve"]])  # (E)
    sd = np.array([p["sd"] for p in row["curve"]])  # (E)
    n = len(row["seeds"])
    (line,) = ax.plot(eps, mean, marker="o", label=f"{row['model']} {row['defense']} ({n} seed{'s' * (n > 1)})")
    ax.fill_between(eps, mean - sd, mean + sd, alpha=0.15, color=line.get_color())


def write_compare_html(path, rows: list[dict]) -> Path:
    """Write the comparison page to ``path`` (through a temporary file); returns the path."""
    path = Path(path)
    if not path.parent.is_dir():
        raise SSMDefenseError(f"cannot write {path}: folder {path.parent} does not exist")
    header, cells = table(rows)
    page = render(
        "compare.html.j2",
        title=f"ssmdefense compare: {sum(len(r['runs']) for r in rows)} runs",
        header=header,
        cells=cells,
        rows=rows,
        plot=plot_curves(rows),
    )
    write_atomically(path, page)
    return path
