"""No silent minutes (``ssmdefense.progress``): each phase of long work says what it did in one line, a
long one says where it is while it runs, bars only on a terminal and never with -q."""

import io
import json
import re
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import make_classifier
from ssmdefense import progress
from ssmdefense.api import get_attack
from ssmdefense.cli import cli

COMPONENT_LINE = re.compile(r"^AutoAttack (?P<name>[a-z-]+): (?P<n>\d+) samples, (?P<robust>\d+) robust, \d+\.\d s$")


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self):
        return True


@pytest.fixture(scope="module")
def clf(digits):
    return make_classifier(digits, d_model=16, n_layers=1, d_state=8)


def small_autoattack(clf):
    return get_attack("autoattack", clf, eps=0.1, max_iter=3, n_queries=10, n_target_classes=2)


def test_autoattack_says_one_line_per_component_off_a_terminal(clf, digits, capsys):
    attack = small_autoattack(clf)
    attack.generate(digits.x_test[:8], digits.y_test[:8])  # verbose=False from the library: silent (ART's way)
    assert capsys.readouterr().err == ""
    with progress.phase("AutoAttack", line=False):  # as the commands run it
        attack.generate(digits.x_test[:8], digits.y_test[:8])
    err = capsys.readouterr().err
    assert "\r" not in err  # no bars in a log file
    found = [m for m in map(COMPONENT_LINE.match, err.splitlines()) if m]
    assert [m["name"] for m in found] == attack.components == ["apgd-ce", "apgd-t", "fab-t", "square"]
    # each line counts the samples it attacked (those every earlier component left robust) and what survived
    robust = [int(round(step["robust_accuracy"] * 8)) for step in attack.breakdown]  # clean, then each
    assert [int(m["n"]) for m in found] == robust[:-1]
    assert [int(m["robust"]) for m in found] == robust[1:]


def test_bars_on_a_terminal_and_lines_alone_without_bars(monkeypatch):
    def work():
        for _ in progress.track(range(3), "counting", unit="steps"):
            pass

    for quiet, expect_bar in ((False, True), (True, False)):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        with progress.without_bars() if quiet else progress.using("auto"):
            work()
        out = terminal.getvalue()
        assert ("\r" in out) is expect_bar, out  # tqdm redraws its bar with carriage returns
        shown = re.split(r"[\r\n]", out)  # what the terminal keeps: the bar is cleared, then the line
        assert any(re.match(r"^counting: 3/3 steps, \d+\.\d s$", line) for line in shown), out  # either way


def test_a_long_phase_says_where_it_is_while_it_runs(monkeypatch, capsys):
    monkeypatch.setattr(progress, "HEARTBEAT", 0.3)
    monkeypatch.setattr(progress, "SETTLE", 0.3)
    with progress.phase("slow work", total=4, unit="parts") as shown:
        shown.update(1)
        shown.status("part 2")
        time.sleep(1.5)
    lines = capsys.readouterr().err.splitlines()
    assert re.match(r"^slow work: 1/4 parts, part 2, \d+ s \.\.\.$", lines[0]), lines
    assert re.match(r"^slow work: 1/4 parts, part 2, \d+\.\d s$", lines[-1]), lines


def test_off_is_silent_and_a_bad_mode_is_a_clear_error(capsys):
    with progress.using("off"):
        list(progress.track(range(2), "hidden"))
        progress.say("hidden")
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress mode must be one of auto, bars, lines, off; got 'loud'"):
        progress.set_mode("loud")


def test_quiet_run_prints_every_phase_line_and_no_bar(tmp_path, monkeypatch):
    from ssmdefense.evaluation import robustness

    def cheap(name, clf, **params):  # the run's standard AutoAttack, at budgets of a few seconds
        extra = {"max_iter": 3, "n_queries": 10, "n_target_classes": 2} if name == "autoattack" else {}
        return get_attack(name, clf, **params, **extra)

    monkeypatch.setattr(robustness, "get_attack", cheap)
    args = ["defend", "--defense", "ads", "--dataset", "digits", "--epochs", "2", "--eval-samples", "40", "-q"]
    args += ["--aa-samples", "8", "-p", "max_iter=2", "-m", "d_model=16", "-m", "n_layers=1", "-m", "d_state=8"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "\r" not in err
    lines = err.splitlines()
    assert sum(bool(re.match(r"^epoch [12]/2 ", line)) for line in lines) == 2  # one line per epoch
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    evaluated = len({report["best"]["epoch"], report["last"]["epoch"]})  # best and last: once each epoch
    assert sum(line.startswith("attacks at eps 0.1: 40 samples, fgsm ") for line in lines) == evaluated
    assert sum(line.startswith("curve at eps ") for line in lines) == 5 * evaluated
    components = [m["name"] for m in map(COMPONENT_LINE.match, lines) if m]
    assert components == ["apgd-ce", "apgd-t", "fab-t", "square"] * evaluated
