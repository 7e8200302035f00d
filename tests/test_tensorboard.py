"""``--log tensorboard``: what TensorBoard shows is what the run measured (read back with TensorBoard's own
reader), a resumed run shows each epoch once, and a missing package is one clear line before any work."""

import json
import sys

import pytest
from click.testing import CliRunner

from ssmdefense.cli import cli

pytest.importorskip("tensorboard")  # the [test] extra installs it; a bare install runs without
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = [
    *("--dataset", "digits", "--epochs", "2", "--eps", "0.1", "--eval-samples", "60", "--aa-samples", "0", "-q"),
    *("-p", "lr=0.01", "-p", "max_iter=2", "-m", "d_model=16", "-m", "n_layers=1", "-m", "d_state=8"),
]
# the tag of each figure of metrics.jsonl's rows
TAGS = {
    "train/loss": lambda r: r["train_loss"],
    "train/accuracy": lambda r: r["train_accuracy"],
    "train/lr": lambda r: r["lr"],
    "eval/clean_accuracy": lambda r: r["clean_accuracy"],
    "eval/robust_accuracy/pgd-10": lambda r: r["robust_accuracy"]["pgd-10"],
    "time/epoch_seconds": lambda r: r["epoch_seconds"],
    "time/eval_seconds": lambda r: r["eval_seconds"],
}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_scalars_match_metrics(acc, metrics):
    for tag, value in TAGS.items():
        logged = acc.Scalars(tag)
        assert [e.step for e in logged] == [r["epoch"] for r in metrics], tag
        assert [e.value for e in logged] == pytest.approx([value(r) for r in metrics], rel=1e-6), tag


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "run"
    result = run("defend", "--defense", "ads", *TINY, "--log", "tensorboard", "--out", out)
    assert result.exit_code == 0, result.output
    assert "TensorBoard: tensorboard --logdir" in result.output
    return out


def test_epoch_scalars_are_the_metrics_of_the_run(logged):
    metrics = rows(logged)
    assert len(metrics) == 2
    assert_scalars_match_metrics(events(logged / "tensorboard"), metrics)
    assert json.loads((logged / "config.json").read_text())["log"] == "tensorboard"


def test_final_figures_are_hparams_and_examples_are_adversarial_images(logged):
    acc = events(logged / "tensorboard")
    report = json.loads((logged / "report.json").read_text())
    assert acc.PluginTagToContent("hparams")  # the HParams dashboard's experiment and session
    for which in ("best", "last"):
        (final,) = acc.Scalars(f"final/{which}/clean_accuracy")
        assert final.value == pytest.approx(report[which]["clean_accuracy"], rel=1e-6)
        (pgd,) = acc.Scalars(f"final/{which}/robust_accuracy/pgd-10")
        assert pgd.value == pytest.approx(report[which]["robust_accuracy"]["pgd-10"], rel=1e-6)
    for kind in ("clean", "adversarial", "perturbation"):
        (image,) = acc.Images(f"examples/{kind}")
        assert (image.width, image.height) == (8 * 8, 8)  # a row of 8 of the digits' 8 x 8 pictures
        assert image.encoded_image_string.startswith(b"\x89PNG")


def test_resumed_run_logs_each_epoch_once(tmp_path, monkeypatch):
    from ssmdefense.defenses import loop

    def stop_at_epoch_2(trainer, out, epoch, *args, **kwargs):
        if epoch == 2:  # Ctrl-C after epoch 2 was logged, before its resume state was saved
            raise KeyboardInterrupt
        return save_state(trainer, out, epoch, *args, **kwargs)

    save_state = loop.save_state
    monkeypatch.setattr(loop, "save_state", stop_at_epoch_2)
    cut = run("defend", "--defense", "ads", *TINY, "--log", "tensorboard", "--out", tmp_path / "cut")
    monkeypatch.setattr(loop, "save_state", save_state)
    assert cut.exit_code == 130 and "interrupted after epoch 1" in cut.output, cut.output
    partial = next(tmp_path.glob(".cut.partial-*"))
    assert [e.step for e in events(partial / "tensorboard").Scalars("train/loss")] == [1, 2]
    resumed = run("defend", "--resume", tmp_path / "cut", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert_scalars_match_metrics(events(tmp_path / "cut" / "tensorboard"), rows(tmp_path / "cut"))


def test_missing_tensorboard_is_one_clear_line_before_any_work(tmp_path, monkeypatch):
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` raises ImportError, as without the package
    result = run("defend", "--defense", "ads", *TINY, "--log", "tensorboard", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "Error: Invalid value for '--log': tensorboard needs the tensorboard package, which is not installed: "
        "pip install 'ssmdefense[tensorboard]'"
    ]
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())


def test_unknown_logger_is_a_clear_error(tmp_path):
    result = run("train", *TINY, "--log", "wandb", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "Invalid value for '--log': must be one of tensorboard; got 'wandb'" in result.stderr


def test_audio_runs_log_clean_and_adversarial_clips(tmp_path):
    from ssmdefense.defenses.tensorboard import TensorBoardLogger
    from test_attacks_audio import SR, T, audio_classifier, tones

    x, y = tones(4, 0)
    with TensorBoardLogger(tmp_path / "tb") as logger:
        logger.log_examples(audio_classifier(), x, y, eps=0.01, seed=0, step=2)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"audio": 0})
    acc.Reload()
    assert sorted(acc.Tags()["audio"]) == [
        f"examples/{i}/{kind}" for i in range(3) for kind in ("adversarial", "clean")
    ]
    (clip,) = acc.Audio("examples/0/adversarial")
    assert (clip.step, clip.sample_rate, clip.length_frames) == (2, SR, T)
    assert clip.encoded_audio_string.startswith(b"RIFF")  # a WAV file TensorBoard plays
