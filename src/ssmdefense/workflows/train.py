"""``run``: a whole experiment as data, ``RunConfig`` -> ``run`` -> ``RunReport``, what ``ssmdefense
defend`` and ``ssmdefense train`` do, callable from Python::

    from ssmdefense.workflows import RunConfig, run
    report = run(RunConfig(defense="ads", out=Path("runs/ads")))
    report.best["robust_accuracy"]["pgd-10"]

``run`` validates every name first, trains with the defense (resumably; the per-epoch evaluation and
the choice of the best checkpoint on the validation split, ``select_on``), evaluates the best and the
last checkpoint on the test split (clean, FGSM, PGD-10 at eps, the accuracy-vs-eps curve and
AutoAttack: the standard one for images, the audio ensemble for waveforms), and writes the run
directory (config.json, metrics.jsonl, best.* / last.*, report.json, report.md, plots/; audio runs
also examples/) under a temporary name that appears only when complete. Its steps: check the
settings, load the data, build the classifier and the defense, train, evaluate best and last, report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from .. import distributed, progress
from ..api import build_model, build_serialiser, get_defense
from ..certification import certify
from ..checkpoint import load as load_checkpoint
from ..contracts import Defense
from ..data.base import Dataset, LazyDataset
from ..data.stream import materialise
from ..defenses.art_trainer import as_defense
from ..defenses.loop import TrainingLoop
from ..defenses.tensorboard import TensorBoardLogger, check_logger
from ..errors import OptionError, RankLost
from ..estimators import SSMClassifier
from ..evaluation.audio import audio_budget, write_audio_examples
from ..evaluation.report import read_report, write_report
from ..evaluation.robustness import aa_attack, autoattack_check, best_last_gap, evaluate_robustness
from ..plugins import registry
from ..seeding import seed_everything
from ..validation import integer, number
from .common import (
    available_cores,
    check_eps,
    load_data,
    resolve_device,
    split_sequence_params,
    staged_directory,
    torch_threads,
    use_threads,
)
from .config import RunConfig
from .resume import interruption

DEFAULT_EPS_FACTORS = (0.0, 0.5, 1.0, 1.5, 2.0)  # robust-accuracy curve at these multiples of eps
DEFAULT_AA_SAMPLES = 100  # AutoAttack in the final evaluation (--aa-samples): images and audio
CERTIFIED_SAMPLES = 100  # the ibp defense's final evaluation also certifies the first 100 test samples
SELECT_ON = ("val", "test")  # the split that chooses the best checkpoint (--select-on)
FINAL_EVALUATION = "final-evaluation.json"  # each evaluated checkpoint's figures, so a resumed run skips them
PARALLEL_AA_SAMPLES = 50  # from this many AutoAttack samples, best and last are evaluated in two processes


@dataclass
class RunReport:
    """What ``report.json`` holds (the one place its schema is written down).

    best, last: ``{"epoch", "clean_accuracy", "robust_accuracy": {"fgsm", "pgd-10"}, "eps_curve", ...}``
        of ``evaluation.robustness.evaluate_robustness`` for the best and the last checkpoint, and
        ``"autoattack"`` (``evaluation.robustness.autoattack_check``: standard AutoAttack on the first
        ``aa_samples`` of them, its breakdown, and the worst case with FGSM and PGD-10) unless
        ``aa_samples`` is 0.
    gap: best minus last (robust overfitting), ``evaluation.robustness.best_last_gap``.
    config: model, dataset, defense, eps, seed, epochs, sequence and the parameters of each, and the
        ``kernels`` that ran.
    timing: seconds per epoch, per-epoch evaluation, training, total, resumed, and the defense's
        cost measurement (``overhead_ratio``).
    classes: class names, when the dataset has them. budget, examples: audio runs only (the eps as
        SNR in dB, and the written WAV/PNG examples). plots: the PNG files written beside the report.
    out: the run directory (not in the JSON).
    """

    best: dict
    last: dict
    gap: dict
    config: dict
    timing: dict
    classes: list | None = None
    budget: dict | None = None
    examples: list | None = None
    plots: list | None = None
    out: Path | None = None

    def to_dict(self) -> dict:
        """The JSON of ``report.json`` (optional sections only when present)."""
        d = {"best": self.best, "last": self.last, "gap": self.gap, "config": self.config}
        for key in ("classes", "budget", "examples"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["timing"] = self.timing
        if self.plots is not None:
            d["plots"] = self.plots
        return d

    @classmethod
    def from_dict(cls, d: dict, out: Path | None = None) -> RunReport:
        return cls(
            best=d["best"],
            last=d["last"],
            gap=d["gap"],
            config=d["config"],
            timing=d["timing"],
            classes=d.get("classes"),
            budget=d.get("budget"),
            examples=d.get("examples"),
            plots=d.get("plots"),
            out=out,
        )

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunReport:
        """The report of a finished run directory."""
        return cls.from_dict(read_report(run_dir, "run directory"), out=Path(run_dir))


@dataclass
class _Setup:
    """What ``run`` builds before training: the data, the classifier and the defense, with every
    setting resolved from the config, the dataset's recommendations and the toolkit's defaults."""

    data: object
    clf: SSMClassifier
    trainer: object
    lazy: bool
    workers: int
    threads: int
    sequence: str
    eps: float
    epochs: int
    eval_samples: int | None
    aa_samples: int
    model_params: dict  # the model's own, as built


def run(config: RunConfig, *, resume_dir: Path | None = None) -> RunReport | None:
    """Train with ``config.defense``, evaluate best and last, write the run directory; the report.

    ``resume_dir``: continue the interrupted run kept there (``resume_config`` finds it); the result
    equals an uninterrupted run. Bad names, parameters or paths raise ``SSMDefenseError`` (a bad
    setting: ``OptionError``) before any work; on any error nothing half-written remains. Stopped
    after an epoch (Ctrl-C, a signal, a lost process), it keeps the run and raises ``RunInterrupted``
    with the epoch and the command that continues it.

    Under ``torchrun`` every process calls it: they train data-parallel (``ssmdefense.distributed``),
    then rank 0 alone evaluates, writes the run directory and returns the report; the others return None.
    """
    c = config
    _check_settings(c)
    device_type = resolve_device(c.device, c.threads)
    world = distributed.init(device_type)
    out = c.out or Path("runs") / f"{c.defense}-{c.model}-{c.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(distributed.broadcast(str(out)))  # rank 0's default name, on every rank
    if resume_dir is None and out.exists() and not c.overwrite:
        raise OptionError("out", "--out", f"{out} already exists (use --overwrite to replace it)")
    distributed.Strategy(world).check_batch_size(c.batch_size)  # before any work (fit checks it again)
    try:
        with contextlib.nullcontext() if c.verbose else progress.without_bars():  # -q: lines, no bars
            return _train_and_report(c, out, resume_dir, device_type, world)
    except (KeyboardInterrupt, SystemExit, RankLost) as exc:
        stopped = interruption(c, out, world, exc)
        if stopped is None:
            raise
        raise stopped from exc


def _train_and_report(
    c: RunConfig, out: Path, resume_dir: Path | None, device_type: str, world: distributed.World
) -> RunReport | None:
    """Build, train (data-parallel under torchrun), then on rank 0 evaluate and write the run."""
    with progress.phase(f"loading {c.dataset}, building {c.model} and {c.defense}", line=False):
        setup = _build(c, _load_data(c, out, resume_dir), device_type, world)
    run_config = _run_config(c, setup, device_type, world)
    train, validation = _training_data(c, setup)
    fit = {"validation_data": validation, "nb_epochs": setup.epochs, "resume": resume_dir is not None}
    fit["checkpoint_extra"] = {key: run_config[key] for key in c.names("checkpoint")}  # evaluate reads them
    if isinstance(setup.trainer, TrainingLoop):
        fit["num_workers"] = setup.workers
    if world.distributed:
        if world.main:  # also with -q: how the run is split is part of its result
            backend, share = "nccl" if device_type == "gpu" else "gloo", c.batch_size // world.size
            print(f"distributed: {world.size} processes ({backend}), global batch {c.batch_size} (about {share} "
                  f"per process); rank 0 writes {out}", file=sys.stderr, flush=True)  # fmt: skip
        if not world.main:  # trains its share and writes nothing; rank 0 evaluates and reports
            try:
                setup.trainer.fit(*train, out_dir=resume_dir, **fit)
            finally:
                distributed.shutdown()
            return None

    with (
        staged_directory(out, c.overwrite, keep_interrupted=True, reuse=resume_dir) as tmp,
        _logger(c, tmp, out, resume_dir) as logger,
    ):
        if resume_dir is None:
            (tmp / "config.json").write_text(json.dumps(run_config, indent=2) + "\n")
        start = time.perf_counter()
        try:
            history = _fit(setup.trainer, train, tmp, fit, logger)
        finally:
            distributed.shutdown()
        train_seconds = time.perf_counter() - start
        x_natural, x_eval, y_eval = _test_data(setup)
        results = _evaluate_best_and_last(c, setup, tmp, device_type, x_eval, y_eval)
        report = _report(c, setup, run_config, results, out)
        if logger is not None:
            _log_final(logger, setup, tmp, device_type, run_config, report, (x_eval, y_eval))
        if setup.clf.is_audio:
            report.budget = audio_budget(setup.clf, x_natural, setup.eps)
            best = load_checkpoint(tmp / "best", device_type=device_type)
            classes = getattr(setup.data, "classes", None)
            with progress.phase("audio examples (clean, adversarial, perturbation)"):
                report.examples = write_audio_examples(
                    tmp / "examples", best, x_natural, y_eval, eps=setup.eps, seed=c.seed, classes=classes
                )
        report.timing = {
            "epoch_seconds": [r["epoch_seconds"] for r in history],
            "eval_seconds": [r.get("eval_seconds") for r in history],
            "peak_memory_mb": [r.get("peak_memory_mb") for r in history],
            "processes": world.size,
            "train_seconds": train_seconds,
            "resumed": resume_dir is not None,
            **setup.trainer.timing,
            "total_seconds": time.perf_counter() - start,
        }
        title = f"ssmdefense {c.command}: {c.defense} on {c.model} / {c.dataset}"
        report.plots = write_report(tmp, report.to_dict(), title, history=history)
    return report


@contextlib.contextmanager
def _logger(c: RunConfig, tmp: Path, out: Path, resume_dir: Path | None) -> Iterator[TensorBoardLogger | None]:
    """The run's TensorBoard logger (None without ``log``), closed before the run directory appears: in
    ``log_dir``, else in the run directory (under its temporary name while the run trains, which the
    line it prints names). A resumed run starts at the epoch after its last saved one."""
    if c.log is None:
        yield None
        return
    log_dir = c.log_dir if c.log_dir is not None else tmp / "tensorboard"
    first = json.loads((tmp / "state.json").read_text())["epoch"] + 1 if resume_dir is not None else 1
    final = f" ({out / 'tensorboard'} when the run completes)" if c.log_dir is None else ""
    progress.say(f"TensorBoard: tensorboard --logdir {log_dir}{final}")
    with TensorBoardLogger(log_dir, first_epoch=first) as logger:
        yield logger


def _fit(trainer: Defense, train: tuple, tmp: Path, fit: dict, logger: TensorBoardLogger | None) -> list[dict]:
    """``trainer.fit`` with the logger as a per-epoch callback; a plugin's defense whose ``fit`` takes
    no ``callbacks`` is logged epoch by epoch once it has trained."""
    takes_callbacks = "callbacks" in inspect.signature(trainer.fit).parameters
    if logger is not None and takes_callbacks:
        return trainer.fit(*train, out_dir=tmp, callbacks=[logger], **fit)
    history = trainer.fit(*train, out_dir=tmp, **fit)
    for row in history if logger is not None else ():
        logger.on_epoch_end(row)
    return history


def _log_final(
    logger: TensorBoardLogger, s: _Setup, tmp: Path, device_type: str, run_config: dict, report: RunReport, test: tuple
) -> None:
    """The final figures as TensorBoard hyper-parameters, and adversarial examples of the best checkpoint."""
    step = report.last["epoch"]
    logger.log_final(run_config, report.to_dict(), step)
    best = load_checkpoint(tmp / "best", device_type=device_type)
    logger.log_examples(best, *test, eps=s.eps, seed=run_config["seed"], step=step)


def _check_settings(c: RunConfig) -> None:
    """The settings that need no data: bad values and unknown names fail here, before any work."""
    for key in ("eps", "seed", "batch_size", "eval_samples", "verbose", "log", "log_dir"):
        if key in c.defense_params:
            raise OptionError("defense_params", "-p", f"set {key} with its own option, not -p")
    integer("aa_samples", c.aa_samples, 0, optional=True, error=OptionError.of("aa_samples"))
    if c.select_on not in SELECT_ON:
        raise OptionError("select_on", "--select-on", f"must be one of {', '.join(SELECT_ON)}; got {c.select_on!r}")
    number("aa_snr_db", c.aa_snr_db, unit="dB", error=OptionError.of("aa_snr_db"))
    integer("workers", c.workers, 0, optional=True, error=OptionError.of("workers"))
    for kind, name in (("datasets", c.dataset), ("models", c.model), ("defenses", c.defense)):
        registry(kind).get(name)
    if c.sequence is not None:
        registry("sequences").get(c.sequence)
    check_logger(c.log)


def _load_data(c: RunConfig, out: Path, resume_dir: Path | None) -> Dataset | LazyDataset:
    """The dataset, with its validation split carved unless ``select_on`` is "test" (which trains on
    all of the training data, as runs did before validation splits); a resumed run must find the
    validation split its best epoch was chosen on."""
    data = load_data(c.dataset, c.data_dir, c.dataset_params, carve=c.select_on == "val")
    if resume_dir is not None:
        recorded = json.loads((resume_dir / "config.json").read_text()).get("validation")
        if recorded is not None and recorded.get("fingerprint") != (data.validation or {}).get("fingerprint"):
            raise OptionError(
                "resume",
                "--resume",
                f"the dataset's validation split is not the one {out} was chosen on "
                f"({recorded.get('description')}): the data or the split settings changed",
            )
    return data


def _build(c: RunConfig, data: Dataset | LazyDataset, device_type: str, world: distributed.World) -> _Setup:
    """The settings resolved (the config's, else the dataset's recommendation, else the default), the
    classifier (seeded: same seed, same initial weights) and the defense."""
    lazy = isinstance(data, LazyDataset)
    threads = use_threads(c.threads, getattr(data, "sample_rate", None) is not None)
    sequence = c.sequence or data.sequence
    eps = c.eps if c.eps is not None else (data.eps if getattr(data, "eps", None) is not None else 0.1)
    recommended = getattr(data, "defaults", {}) or {}
    eval_samples = c.eval_samples or recommended.get("eval_samples")
    aa_samples = c.aa_samples if c.aa_samples is not None else recommended.get("aa_samples", DEFAULT_AA_SAMPLES)
    sequence_params, model_params = split_sequence_params(sequence, dict(c.model_params), c.model)
    serialiser = build_serialiser(sequence, data.input_shape, **sequence_params)
    seed_everything(c.seed)  # the initial weights too: same seed, same run
    body = build_model(c.model, serialiser.D, data.nb_classes, **model_params)
    clf = SSMClassifier(
        body,
        input_shape=data.input_shape,
        nb_classes=data.nb_classes,
        sequence=sequence,
        sequence_params=serialiser.params,
        sample_rate=getattr(data, "sample_rate", None),
        clip_values=data.clip_values,
        device_type=device_type,
    )
    check_eps(eps, clf.clip_values)
    run_params = {"eps": eps, "seed": c.seed, "batch_size": c.batch_size, "eval_samples": eval_samples}
    run_params["verbose"] = c.verbose
    # a plugin's plain ART trainer gets the per-epoch evaluation and checkpoints (contracts.Defense)
    trainer = as_defense(get_defense(c.defense, clf, **run_params, **c.defense_params), c.defense, run_params)
    if (lazy or world.distributed) and not isinstance(trainer, TrainingLoop):
        raise OptionError(
            "defense",
            "--defense",
            f"{c.defense!r} is a plain ART trainer: it trains on arrays in one process, so it takes "
            f"neither a lazily loaded dataset nor torchrun",
        )
    if lazy and tuple(clf.input_shape) != tuple(data.input_shape):  # features computed up front
        raise OptionError(
            "sequence", "--sequence", f"{sequence!r} with attack_space=features needs the dataset in memory, not lazy"
        )
    return _Setup(
        data=data,
        clf=clf,
        trainer=trainer,
        lazy=lazy,
        workers=c.workers if c.workers is not None else (2 if lazy else 0),
        threads=threads,
        sequence=sequence,
        eps=eps,
        epochs=c.epochs or recommended.get("epochs", 10),
        eval_samples=eval_samples,
        aa_samples=aa_samples,
        model_params=body.ssmdefense_config["params"],
    )


def _run_config(c: RunConfig, s: _Setup, device_type: str, world: distributed.World) -> dict:
    """config.json: every recorded setting as the run resolved it, and what ran (the sequence mode's
    parameters, kernels, validation split, processes, the trainer's own description)."""
    resolved = dataclasses.replace(
        c,
        model_params=s.model_params,  # the model's own, as built (the sequence mode's below)
        sequence=s.sequence,
        eps=s.eps,
        epochs=s.epochs,
        device=device_type,
        threads=s.threads,
        eval_samples=s.eval_samples,
        aa_samples=s.aa_samples,
        workers=s.workers,
    )
    return {
        **resolved.record(),
        "sequence_params": s.clf.sequence_params,
        "sample_rate": s.clf.sample_rate,
        "kernels": s.clf.kernels,
        "validation": s.data.validation if c.select_on == "val" else None,
        "processes": world.size,
        "trainer": s.trainer.describe(),
    }


def _training_data(c: RunConfig, s: _Setup) -> tuple:
    """(the training data as ``fit`` takes it, the per-epoch evaluation's data): that evaluation,
    which chooses the best checkpoint, runs on the validation split (or, with select_on="test", on
    the test split the report scores)."""
    data, clf = s.data, s.clf
    if s.lazy:  # read batch by batch
        return (data.train, None), data.val if c.select_on == "val" else data.test
    chosen_on = (data.x_val, data.y_val) if c.select_on == "val" else (data.x_test, data.y_test)
    return (clf.prepare_inputs(data.x_train), data.y_train), (clf.prepare_inputs(chosen_on[0]), chosen_on[1])


def _test_data(s: _Setup) -> tuple:
    """(natural inputs, model inputs, labels) of the first ``eval_samples`` test samples, for the final
    evaluation (a lazy dataset's are read now, on rank 0, after training)."""
    if s.lazy:
        x_natural, y_eval = materialise(s.data.test, None, s.eval_samples, num_workers=s.workers)
        return x_natural, x_natural, y_eval
    n_eval = len(s.data.y_test) if s.eval_samples is None else s.eval_samples
    x_natural = s.data.x_test[:n_eval]
    return x_natural, s.clf.prepare_inputs(x_natural), s.data.y_test[:n_eval]


def _evaluate_best_and_last(
    c: RunConfig, s: _Setup, tmp: Path, device_type: str, x_eval: np.ndarray, y_eval: np.ndarray
) -> dict:
    """``{"best", "last"}``: each checkpoint's clean, FGSM and PGD-10 accuracy at eps, the curve over
    multiples of eps, and AutoAttack on the first ``aa_samples`` (once per epoch: best and last are
    often the same epoch). Each checkpoint's figures are kept in ``FINAL_EVALUATION`` as soon as they
    are done, so a run killed during the final evaluation resumes after the last finished checkpoint.
    Two different checkpoints are evaluated at once, the last one in a second process, when the CPU
    run's AutoAttack is long enough to pay for that process's start (``_second_process_threads``: each
    process on the run's threads where the cores hold twice them, else on half of them): every figure
    is the same as one after the other (each evaluation seeds itself)."""
    kept = tmp / FINAL_EVALUATION
    by_epoch = json.loads(kept.read_text()) if kept.is_file() else {}  # what an interrupted run finished
    found = {}  # which -> (epoch, key, classifier)
    for which in ("best", "last"):
        ckpt = load_checkpoint(tmp / which, device_type=device_type)  # also checks the files load
        epoch = ckpt.checkpoint_meta["extra"]["epoch"]
        found[which] = (epoch, f"{epoch}:{_digest(tmp / which)}", ckpt)
    pending, announced = {}, set()  # key -> the first checkpoint with it; the kept keys said
    for which, (epoch, key, _) in found.items():
        if key not in by_epoch:
            pending.setdefault(key, which)
        elif key not in announced:
            progress.say(f"the {which} checkpoint's evaluation (epoch {epoch}) is kept from the interrupted run")
            announced.add(key)
    task = _FinalEvaluation(s.eps, c.seed, s.aa_samples, c.aa_snr_db, c.defense in ("ibp", "crown-ibp"))

    def keep(key: str, figures: dict) -> None:
        by_epoch[key] = json.loads(json.dumps(figures))  # as JSON: the same whether computed now or kept
        _write_atomically(kept, json.dumps(by_epoch))  # a run killed from here on resumes after this checkpoint

    def beside(there: str, there_task: _FinalEvaluation, here: Callable[[], None]) -> dict:
        """``here()`` in this process while a second one runs ``there_task`` on the ``there``
        checkpoint, each on ``threads`` threads; the second one's figures (``here`` keeps its own). A
        second process that fails (a fresh interpreter lacks what this one registered by hand, e.g. a
        plugin's sequence mode, and cannot load the checkpoint) leaves its part to this one."""
        args = (tmp / there, device_type, threads, progress.mode(), there, there_task, x_eval, y_eval)
        pool = multiprocessing.get_context("spawn").Pool(1)  # a fresh interpreter: no fork of torch's threads
        try:
            with progress.without_bars(), torch_threads(threads):
                future = pool.apply_async(_evaluate_saved, args)
                here()
                try:
                    return future.get()
                except Exception as exc:  # noqa: BLE001 - any failure there: the same work here, which raises if it must
                    progress.say(
                        f"the second process could not evaluate the {there} checkpoint ({exc}); evaluating it here"
                    )
            return _evaluate_checkpoint(
                load_checkpoint(tmp / there, device_type=device_type), there, there_task, x_eval, y_eval
            )
        finally:
            pool.terminate()  # a run stopped here (Ctrl-C, SIGTERM, an error) leaves no evaluation running behind
            pool.join()

    threads = _second_process_threads(s, device_type)
    if len(pending) == 2 and threads:
        (key_here, here), (key_there, there) = pending.items()
        progress.say(f"evaluating the {there} checkpoint in a second process, beside the {here} one")

        def evaluate_here() -> None:
            keep(key_here, _evaluate_checkpoint(found[here][2], here, task, x_eval, y_eval))

        keep(key_there, beside(there, task, evaluate_here))
    elif len(pending) == 1 and task.aa_samples and threads:
        ((key, which),) = pending.items()  # one checkpoint to evaluate: best and last are one, or one is kept
        progress.say(f"evaluating the {which} checkpoint's curve in a second process, beside its AutoAttack")
        aa: dict = {}

        def autoattack_here() -> None:
            aa.update(_autoattack(found[which][2], task, x_eval, y_eval))

        rest = beside(which, dataclasses.replace(task, aa_samples=None), autoattack_here)
        keep(key, _merged(rest, aa))
    else:
        for key, which in pending.items():
            keep(key, _evaluate_checkpoint(found[which][2], which, task, x_eval, y_eval))
    kept.unlink(missing_ok=True)  # report.json holds it all
    return {which: {"epoch": epoch, **by_epoch[key]} for which, (epoch, key, _) in found.items()}


@dataclass(frozen=True)
class _FinalEvaluation:
    """What the final evaluation of a checkpoint runs (picklable: a second process gets it)."""

    eps: float
    seed: int
    aa_samples: int | None
    snr_db: float
    certified: bool  # the ibp and crown-ibp defenses: also the verified accuracy, by interval bounds


def _evaluate_checkpoint(ckpt: SSMClassifier, which: str, task: _FinalEvaluation, x: np.ndarray, y: np.ndarray) -> dict:
    """One checkpoint's clean, FGSM, PGD-10 and curve figures, its AutoAttack and (certified training)
    its verified accuracy."""
    what = f"clean, FGSM, PGD-10 at eps={task.eps} and a curve"
    progress.say(f"evaluating the {which} checkpoint ({what}) on {len(y)} test samples")
    eps_list = [round(f * task.eps, 10) for f in DEFAULT_EPS_FACTORS]
    figures = evaluate_robustness(ckpt, x, y, eps=task.eps, attacks=("fgsm", "pgd"), eps_list=eps_list, seed=task.seed)
    figures.update(_autoattack(ckpt, task, x, y))
    if task.certified:
        n = min(CERTIFIED_SAMPLES, len(y))
        found = certify(ckpt, x[:n], y[:n], method="ibp", eps=task.eps)
        figures["certified"] = {k: found[k] for k in ("method", "eps", "samples", "certified_accuracy")}
    return figures


def _autoattack(ckpt: SSMClassifier, task: _FinalEvaluation, x: np.ndarray, y: np.ndarray) -> dict:
    """``{"autoattack": ...}``: the standard AutoAttack on the first ``task.aa_samples`` samples (seeded
    on its own, so it gives the same figures in whichever process runs it), or ``{}`` without one."""
    if not task.aa_samples:
        return {}
    n = min(task.aa_samples, len(y))
    progress.say(f"{aa_attack(ckpt)} (standard) on {n} samples, with FGSM and PGD-10 on the same")
    return {"autoattack": autoattack_check(ckpt, x[:n], y[:n], eps=task.eps, seed=task.seed, snr_db=task.snr_db)}


def _merged(rest: dict, aa: dict) -> dict:
    """One checkpoint's figures, evaluated in two parts, in ``_evaluate_checkpoint``'s order."""
    certified = {"certified": rest["certified"]} if "certified" in rest else {}
    return {**{k: v for k, v in rest.items() if k != "certified"}, **aa, **certified}


def _evaluate_saved(
    stem: Path,
    device_type: str,
    threads: int,
    mode: str,
    which: str,
    task: _FinalEvaluation,
    x: np.ndarray,
    y: np.ndarray,
) -> dict:
    """``_evaluate_checkpoint`` in a second process: the checkpoint saved at ``stem``, the parent's
    threads, and its progress lines (never bars) marked with the checkpoint's name. It ends itself
    within a second of its parent's end, however that ends (SIGKILL included): a killed run leaves
    nothing computing behind it."""
    end_with_parent()
    progress.in_worker_process()
    torch.set_num_threads(threads)
    progress.set_mode("lines" if mode == "bars" else mode)
    with progress.prefixed(f"[{which}] "):
        return _evaluate_checkpoint(load_checkpoint(stem, device_type=device_type), which, task, x, y)


def end_with_parent() -> None:
    """In a worker process: end it (``os._exit``) within a second of its parent's end, checked by a
    daemon thread (the parent changes when the process is orphaned)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)  # the parent is gone: nobody waits for this evaluation (a resumed run does it again)

    threading.Thread(target=watch, name="ssmdefense-parent-watch", daemon=True).start()


def _second_process_threads(s: _Setup, device_type: str) -> int | None:
    """Threads for each of two final-evaluation processes, or None to evaluate in this one: on the CPU,
    with an AutoAttack of at least ``PARALLEL_AA_SAMPLES`` samples (long beside the few seconds a new
    interpreter takes to import torch), the run's threads where the cores hold twice them, else half
    of them each. An audio run's 2 threads on 2 cores: its best and last checkpoints' audio
    AutoAttacks took 111 s side by side at one thread each, against 2 x 65 s one after the other at
    two (docs/performance.md)."""
    if device_type != "cpu" or (s.aa_samples or 0) < PARALLEL_AA_SAMPLES:
        return None
    threads, cores = torch.get_num_threads(), available_cores()
    if 2 * threads > cores:
        threads //= 2
    return threads if threads >= 1 and 2 * threads <= cores else None


def _digest(stem: Path) -> str:
    """The checkpoint's weights file, hashed: a kept evaluation is reused only for the same weights."""
    return hashlib.sha256(stem.with_suffix(".safetensors").read_bytes()).hexdigest()[:16]


def _write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file and a rename: a kill leaves the old file or the new one."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def _report(c: RunConfig, s: _Setup, run_config: dict, results: dict, out: Path) -> RunReport:
    """The report of the evaluated checkpoints (its timing, and for audio its budget and examples, are
    added by ``run``)."""
    keys = (*c.names("report"), "sequence_params", "kernels", "validation")
    config = {key: run_config[key] for key in keys}
    return RunReport(
        best=results["best"],
        last=results["last"],
        gap=best_last_gap(results["best"], results["last"]),
        config=config,
        timing={},
        classes=list(s.data.classes) if getattr(s.data, "classes", None) else None,
        out=out,
    )
