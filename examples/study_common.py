"""What the study scripts (``defense_study.py``, ``audio_study.py``) share: logging the command
equivalent to each API call, and one row from the runs of several seeds, every accuracy as the mean
and the sample standard deviation (n - 1) over the seeds."""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path


def add_seed_options(parser) -> None:
    """``--seeds`` and ``--check-seeds``, the same in every study script; ``seeds_from`` parses them."""
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; several give mean ± sd")
    parser.add_argument(
        "--check-seeds",
        default=None,
        help="comma-separated seeds whose evaluation runs the gradient-masking checks "
        "(default: every seed; audio_study: with --checks)",
    )


def seeds_from(args) -> None:
    """Turn ``args.seeds`` and ``args.check_seeds`` into lists of ints (check seeds default to all)."""
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.check_seeds = args.seeds if args.check_seeds is None else [int(s) for s in args.check_seeds.split(",")]


def log_command(args: list[str], log) -> None:
    """Print and log the command line equivalent to what the next API call does."""
    line = "ssmdefense " + " ".join(shlex.quote(a) for a in args)
    print(f"$ {line}", flush=True)
    log.write(line + "\n")
    log.flush()


#: the keys whose values are accuracies (averaged over seeds); other values are the first seed's
ACCURACY_KEYS = (
    "ca",
    "ra",
    "val_ra",
    "aa",
    "aa_linf",
    "pgd_aa_samples",
    "independent",
    "independent_linf",
    "eval_ca",
    "eval_ra",
    "snr",
    "time_shift",
    "speed",
    "ra_last",
    "aa_last",
)


def mean_sd(values: list):
    """(mean, sd) of numbers, or of dicts of numbers key by key; sd is None for one value."""
    if isinstance(values[0], dict):
        pairs = {k: mean_sd([v[k] for v in values]) for k in values[0]}
        return {k: m for k, (m, _) in pairs.items()}, {k: s for k, (_, s) in pairs.items()}
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(runs: list[dict], nested: tuple[str, ...] = ()) -> dict:
    """One row from its seeds' ``runs`` (each with a ``seed``): the first run's fields, with every
    accuracy key (at the top, or inside the ``nested`` dicts such as "best" and "last") replaced by
    the mean and its sd stored beside it as ``<key>_sd``; ``masking_suspected`` when any seed is."""
    row = {**runs[0], "seeds": [r["seed"] for r in runs], "runs": runs}
    row["masking_suspected"] = (
        None if runs[0]["masking_suspected"] is None else any(r["masking_suspected"] for r in runs)
    )
    for where in (None, *nested):
        target = row if where is None else dict(runs[0][where])
        for key in ACCURACY_KEYS:
            if key in target:
                target[key], target[f"{key}_sd"] = mean_sd([(r if where is None else r[where])[key] for r in runs])
        if where is not None:
            row[where] = target
    return row


def fmt(value: float, sd: float | None) -> str:
    """``0.512`` for one seed, ``0.512 ± 0.010`` for several."""
    return f"{value:.3f}" if sd is None else f"{value:.3f} ± {sd:.3f}"


def save_rows(path: Path, rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Write ``rows`` into the results file ``path``, keeping the rows of earlier calls (a study run in
    parts, e.g. one model per call) and replacing those with the same ``keys``; returns them all."""
    key = lambda r: tuple(r[k] for k in keys)  # noqa: E731
    fresh = {key(r) for r in rows}
    earlier = json.loads(path.read_text()) if path.is_file() else []
    merged = [r for r in earlier if key(r) not in fresh] + rows
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged
