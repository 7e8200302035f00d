"""What the study scripts (``defense_study.py``, ``audio_study.py``, ``thesis_audio.py``,
``model_zoo_table.py``) share: logging the command equivalent to each API call, the figures they add
to ``ssmdefense compare``'s table (``Column``s read from each run directory), and the summary: the
table, mean ± sample sd over seeds, built by ``ssmdefense.evaluation.compare`` from the run
directories, the same table ``ssmdefense compare`` prints over them with the study's columns added."""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

from ssmdefense.evaluation.compare import Column, autoattack_figure, compare_runs, render_markdown, write_compare_html


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


def read(directory: Path, name: str = "report.json") -> dict:
    """The JSON file ``name`` of a run directory (``evaluation/report.json``, ...); {} when missing."""
    path = Path(directory) / name
    return json.loads(path.read_text()) if path.is_file() else {}


def _epoch_seconds(d: Path) -> float:
    seconds = read(d)["timing"]["epoch_seconds"]
    return statistics.fmean(seconds)


def _masking(d: Path) -> str:
    verdict = read(d, "evaluation/report.json").get("gradient_masking_suspected")
    return {None: "not run", True: "yes", False: "no"}[verdict]


# The columns more than one study adds after compare's figures.
BEST_EPOCH = Column(
    "best epoch", lambda d: f"{read(d)['best']['epoch']}/{len(read(d)['timing']['epoch_seconds'])}", "text"
)
S_PER_EPOCH = Column("s/epoch", _epoch_seconds, "seconds")
OVERHEAD = Column("overhead", lambda d: read(d)["timing"].get("overhead_ratio"), "ratio")
MASKING = Column("masking?", _masking, "text")
CA_LAST = Column("clean last", lambda d: read(d)["last"]["clean_accuracy"])
AA_LINF = Column("AA L-inf", lambda d: read(d)["best"]["autoattack"]["linf_worst_case"])


def independent(name: str, which: str = "best", key: str = "independent") -> Column:
    """The independent margin PGD's figure ``key`` (examples/independent_pgd.py, kept beside the
    evaluation) at the ``which`` checkpoint."""
    return Column(name, lambda d: read(d, f"evaluation/independent-{which}.json").get(key))


def evaluated_last_autoattack(d: Path) -> float | None:
    """The AutoAttack figure of the last checkpoint: the run's own, else its evaluation's."""
    own = autoattack_figure(read(d)["last"])
    return own if own is not None else autoattack_figure(read(d, "evaluation/report.json").get("last", {}))


AA_LAST = Column("AA last", evaluated_last_autoattack)


def summary_table(root: Path, directories: list[Path], columns: tuple[Column, ...]) -> str:
    """The study's table over its run ``directories`` (Markdown, ``ssmdefense compare``'s rows with
    ``columns`` added). Keeps the rows in ``root/results.json`` (a study run in parts keeps every
    part's rows, a row measured again replaces its old one) and writes ``root/compare.html`` over
    all of them."""
    rows = compare_runs(directories, columns)
    every = save_rows(root / "results.json", rows, ("settings",))
    runs = [r for row in every if "settings" in row for r in row["runs"]]  # not rows of an older format
    write_compare_html(root / "compare.html", compare_runs(runs, columns), columns)
    return render_markdown(rows, columns)


def row_line(directories: list[Path], columns: tuple[Column, ...]) -> str:
    """One study row's line of the table, printed as soon as the row is measured."""
    return render_markdown(compare_runs(directories, columns), columns).splitlines()[-1]


def save_rows(path: Path, rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Write ``rows`` into the results file ``path``, keeping the rows of earlier calls (a study run in
    parts, e.g. one model per call) and replacing those with the same ``keys``; returns them all."""
    key = lambda r: json.dumps([r.get(k) for k in keys], sort_keys=True)  # noqa: E731
    fresh = {key(r) for r in rows}
    earlier = json.loads(path.read_text()) if path.is_file() else []
    merged = [r for r in earlier if key(r) not in fresh] + rows
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged
