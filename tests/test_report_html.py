"""report.html and compare.html as a person sees them: opened in headless Chromium (the system's
``chromium``, driven by Playwright), every picture decoded, every player loaded with its clip's
length, the tables holding report.json's figures, no console error, nothing fetched from outside
the file. A screenshot of each page is kept under pytest's tmp path.

Without chromium these tests skip locally (with the reason); CI installs it and sets
SSMDEFENSE_REQUIRE_BROWSER=1, which turns the skip into a failure."""

import base64
import io
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ssmdefense.cli import cli
from ssmdefense.evaluation.compare import cell
from ssmdefense.evaluation.html import round_gain
from ssmdefense.evaluation.report import write_report
from test_data_audio_files import write_speech_commands_tree

TINY = ["--epochs", "1", "-q", "--threads", "1", "--aa-samples", "0", "-p", "lr=0.01", "-p", "max_iter=2"]
TINY += ["-m", "d_model=16", "-m", "n_layers=1", "-m", "d_state=8"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def pct(v):
    return f"{100 * v:.1f}%"


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """PGD-AT for one epoch of a tiny S4D on digits (no AutoAttack: its square attack alone takes
    minutes; the AutoAttack table is checked on ``full_report``)."""
    out = tmp_path_factory.mktemp("image") / "run"
    result = run("defend", "--defense", "pgd-at", "--dataset", "digits", "--eval-samples", "60", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    """PGD-AT for one epoch on a small Speech Commands tree: a mel run with listenable examples."""
    root = tmp_path_factory.mktemp("speech")
    write_speech_commands_tree(root, per_word=6, n_test=2, n_valid=1)
    out = root / "run"
    result = run(
        "defend", "--defense", "pgd-at", "--dataset", "speech-commands", "--data-dir", root, *TINY, "--out", out
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def full_report(image_run, pages):
    """The image run's report with what a long run adds (an AutoAttack breakdown, masking checks, one
    failed, a certified section), written by write_report into a run directory of its own."""
    report = json.loads((image_run / "report.json").read_text())
    best = report["best"]
    best["autoattack"] = {
        "attack": "autoattack",
        "samples": 20,
        "version": "standard",
        "components": ["apgd-ce", "apgd-t", "fab-t", "square"],
        "clean_accuracy": 0.85,
        "robust_accuracy": {"fgsm": 0.6, "pgd-10": 0.55, "autoattack": 0.4},
        "breakdown": [
            {"component": c, "robust_accuracy": a, "seconds": 1.0}
            for c, a in [("clean", 0.85), ("apgd-ce", 0.5), ("apgd-t", 0.45), ("fab-t", 0.4), ("square", 0.4)]
        ],
        "worst_case": 0.4,
        "seconds": 4.0,
    }
    best["sanity"] = {
        "gradient_masking_suspected": True,
        "checks": [
            {"name": "iterations help", "passed": True, "detail": "pgd-100 0.40 <= pgd-10 0.55"},
            {"name": "unbounded attack succeeds", "passed": False, "detail": "accuracy 0.30 at eps 1"},
        ],
    }
    best["certified"] = {
        "ibp": {"samples": 20, "curve": [{"eps": 0.01, "certified_accuracy": 0.35, "empirical_accuracy": 0.6}]}
    }
    directory = pages / "full"
    directory.mkdir()
    write_report(directory, report, "a long run")
    return directory, report


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Where the pages' screenshots (and compare.html) go: a test artefact under pytest's tmp path."""
    return tmp_path_factory.mktemp("pages")


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium through Playwright (never a downloaded browser)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("SSMDEFENSE_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (CI installs it: apt-get install -y chromium)")
        pytest.skip("chromium is not installed: apt-get install -y chromium (see docs/user-guide.md)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=["--autoplay-policy=no-user-gesture-required"])
        yield chromium
        chromium.close()


def open_page(browser, path, screenshot):
    """Open ``path`` and check what any page must: loaded with no console error and nothing fetched
    but the file itself, every picture decoded. Returns (page, its tables as lists of cell texts)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, fetched = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url) if not r.url.startswith("data:") else None)
    page.goto(path.as_uri(), wait_until="load")
    images = page.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth])")
    assert images and all(done and width > 0 for done, width in images), images
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert errors == [] and fetched == [path.as_uri()], (errors, fetched)
    tables = page.eval_on_selector_all(
        "table", "ts => ts.map(t => [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim())))"
    )
    return page, tables


def table_with(tables, *header):
    found = [t for t in tables if all(h in t[0] for h in header)]
    assert found, (header, [t[0] for t in tables])
    return found[0]


def test_image_report_html_shows_the_figures_and_plots(browser, image_run, pages):
    report = json.loads((image_run / "report.json").read_text())
    page, tables = open_page(browser, image_run / "report.html", pages / "image-report.png")
    assert page.eval_on_selector_all("img", "els => els.length") == len(report["plots"]) == 2
    accuracy = table_with(tables, "checkpoint", "epoch", "clean", "pgd-10")
    for row in accuracy[1:]:
        r = report[row[0]]
        assert row[2] == pct(r["clean_accuracy"]) and row[accuracy[0].index("pgd-10")] == pct(
            r["robust_accuracy"]["pgd-10"]
        )
    settings = dict(table_with(tables, "setting", "value")[1:])
    assert settings["model"] == '"s4d"' and settings["dataset"] == '"digits"' and settings["eps"] == "0.1"
    per_class = table_with(tables, "checkpoint", "attack", "0", "9")
    assert per_class[1][2:] == [pct(v) for v in report["best"]["per_class"]["clean"]]
    assert page.title() == "ssmdefense defend: pgd-at on s4d / digits"


def test_full_report_html_shows_autoattack_masking_and_certified(browser, full_report, pages):
    directory, report = full_report
    page, tables = open_page(browser, directory / "report.html", pages / "full-report.png")
    aa = table_with(tables, "apgd-ce", "square", "worst case")
    assert aa[1][:3] == ["best", "85.0%", "50.0%"] and aa[1][aa[0].index("worst case")] == "40.0%"
    checks = table_with(tables, "check", "result")
    assert checks[1:] == [
        ["iterations help", "pass", "pgd-100 0.40 <= pgd-10 0.55"],
        ["unbounded attack succeeds", "FAIL", "accuracy 0.30 at eps 1"],
    ]
    failed = page.eval_on_selector_all("td.fail", "els => els.map(e => getComputedStyle(e).color)")
    assert failed == ["rgb(179, 18, 29)"]  # the failed check stands out in red
    assert "Gradient masking suspected" in page.inner_text("body")
    certified = table_with(tables, "method", "certified")
    assert certified[1][:4] == ["best", "ibp", "L-inf eps 0.01", "35.0%"]


def assert_every_player_loads_its_clip(page, folder, examples):
    """Three players per example (clean, adversarial, perturbation), each loaded without error and as
    long as the clip the run wrote."""
    page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)", timeout=10_000)
    players = page.eval_on_selector_all("audio", "els => els.map(a => [a.readyState, a.duration, a.error])")
    clip, rate = sf.read(folder / examples[0]["clean_wav"], dtype="float32")
    assert len(players) == 3 * len(examples)
    assert all(state >= 1 and error is None and abs(d - len(clip) / rate) < 0.01 for state, d, error in players)


def test_audio_report_html_plays_clean_adversarial_and_perturbation(browser, audio_run, pages):
    report = json.loads((audio_run / "report.json").read_text())
    examples = report["examples"]
    assert examples, "the run wrote no audio example"
    page, _ = open_page(browser, audio_run / "report.html", pages / "audio-report.png")
    assert_every_player_loads_its_clip(page, audio_run, examples)
    labels = page.eval_on_selector_all(".clips label", "els => els.map(e => e.innerText)")
    assert labels[:2] == ["clean", "adversarial"] and labels[2].startswith("perturbation alone, amplified ×")
    text = page.inner_text("#examples")
    for e in examples:
        assert f"{e['label']}: predicted {e['clean_prediction']} when clean" in text
        assert f"{e['adversarial_prediction']} under attack; perturbation SNR {e['snr_db']:.1f} dB" in text
    assert page.eval_on_selector_all("#examples img", "els => els.length") == len(examples)


def test_the_amplified_perturbation_is_the_difference_times_its_gain(audio_run):
    e = json.loads((audio_run / "report.json").read_text())["examples"][0]
    html = (audio_run / "report.html").read_text()
    gain = float(html.split("amplified ×", 1)[1].split("<", 1)[0])
    uri = html.split("amplified ×", 1)[1].split('src="data:audio/wav;base64,', 1)[1].split('"', 1)[0]
    heard, _ = sf.read(io.BytesIO(base64.b64decode(uri)), dtype="float32")
    clean, _ = sf.read(audio_run / e["clean_wav"], dtype="float32")
    adversarial, _ = sf.read(audio_run / e["adversarial_wav"], dtype="float32")
    np.testing.assert_allclose(heard, gain * (adversarial - clean), atol=1e-6)
    assert 0.25 < np.abs(heard).max() <= 0.5 and gain >= 100  # ~eps 0.001 made audible
    assert round_gain(714.2) == 700 and round_gain(0.5) == 1


@pytest.fixture(scope="module")
def seeded_runs(image_run, pages):
    """The image run and a copy of it as seed 1 with other figures: two runs that differ only by seed."""
    copy = pages / "image-seed1"
    shutil.copytree(image_run, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "seed": 1}))
    report = json.loads((copy / "report.json").read_text())
    report["best"]["clean_accuracy"] = 0.9
    report["best"]["robust_accuracy"]["pgd-10"] += 0.1
    for p in report["best"]["curve"]:
        p["pgd-10"] += 0.1
    (copy / "report.json").write_text(json.dumps(report))
    return image_run, copy


def test_compare_groups_seeds_and_sorts_by_the_robust_figure(seeded_runs, audio_run):
    first, second = seeded_runs
    result = run("compare", audio_run, first, second, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert sorted((r["dataset"], r["seeds"]) for r in rows) == [("digits", [0, 1]), ("speech-commands", [0])]
    reports = [json.loads((d / "report.json").read_text())["best"] for d in (first, second)]
    digits = next(r for r in rows if r["dataset"] == "digits")
    pgd = [r["robust_accuracy"]["pgd-10"] for r in reports]
    assert digits["seeds"] == [0, 1] and digits["figures"]["pgd-10"]["n"] == 2
    assert digits["figures"]["pgd-10"]["mean"] == pytest.approx(np.mean(pgd))
    assert digits["figures"]["pgd-10"]["sd"] == pytest.approx(np.std(pgd, ddof=1))
    robust = [r["figures"]["pgd-10"]["mean"] for r in rows]
    assert robust == sorted(robust, reverse=True)
    table = run("compare", first, second).output
    assert f"| s4d | digits | pgd-at | 0.1 | 0, 1 | {cell('accuracy', digits['figures']['clean'])} |" in table
    assert " ± " in table


@pytest.fixture(scope="module")
def centre_run(tmp_path_factory):
    """The image run's command with one model parameter changed (``-m norm=centre``)."""
    out = tmp_path_factory.mktemp("centre") / "run"
    args = ["defend", "--defense", "pgd-at", "--dataset", "digits", "--eval-samples", "60", *TINY]
    result = run(*args, "-m", "norm=centre", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_compare_keeps_runs_apart_that_differ_in_a_model_parameter(image_run, centre_run):
    assert json.loads((centre_run / "config.json").read_text())["model_params"]["norm"] == "centre"
    result = run("compare", image_run, centre_run, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert sorted(r["label"]["model"] for r in rows) == ["s4d", "s4d (norm=centre)"]  # what differs, only that
    assert all(r["seeds"] == [0] and r["figures"]["pgd-10"]["n"] == 1 for r in rows)  # two rows, not one of 2 seeds
    by_run = {r["runs"][0]: r for r in rows}
    for d in (image_run, centre_run):
        best = json.loads((d / "report.json").read_text())["best"]
        assert by_run[str(d)]["figures"]["clean"]["mean"] == best["clean_accuracy"]
    table = run("compare", image_run, centre_run).output
    assert (
        "| s4d (norm=centre) | digits | pgd-at | 0.1 | 0 |" in table and "| s4d | digits | pgd-at | 0.1 | 0 |" in table
    )


def test_compare_html_in_the_browser(browser, seeded_runs, audio_run, pages):
    page_path = pages / "compare.html"
    result = run("compare", *seeded_runs, audio_run, "--html", page_path)
    assert result.exit_code == 0, result.output
    assert f"page: {page_path}" in result.output
    page, tables = open_page(browser, page_path, pages / "compare.png")
    header, *rows = table_with(tables, "model", "dataset", "seeds", "PGD-10", "AutoAttack")
    assert len(rows) == 2 and {r[header.index("seeds")] for r in rows} == {"0, 1", "0"}
    digits = next(r for r in rows if r[1] == "digits")
    pgd = [json.loads((d / "report.json").read_text())["best"]["robust_accuracy"]["pgd-10"] for d in seeded_runs]
    assert digits[header.index("PGD-10")] == f"{100 * np.mean(pgd):.1f} ± {100 * np.std(pgd, ddof=1):.1f}%"
    assert page.eval_on_selector_all("img", "els => els.length") == 1  # robust accuracy vs eps, overlaid


@pytest.mark.parametrize(
    "args, message",
    [
        (["--html", "{tmp}/page.html"], "no runs to compare"),
        (["{empty}", "--html", "{tmp}/page.html"], "no report.json in"),
        (["{run}", "{empty}", "--html", "{tmp}/page.html"], "no report.json in"),
        (["{run}", "--html", "{tmp}/missing/page.html"], "does not exist"),
    ],
)
def test_compare_bad_input_exits_2_with_one_line_and_writes_nothing(image_run, tmp_path_factory, args, message):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty").mkdir()
    fill = {"empty": tmp / "empty", "run": image_run, "tmp": tmp}
    result = run("compare", *[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp / "page.html").exists()
    assert sorted(p.name for p in tmp.iterdir()) == ["empty"]


def attack_out(checkpoint, out, *args):
    """``ssmdefense attack ... --out out --json``: its JSON and the report.json it wrote."""
    result = run("attack", "--checkpoint", checkpoint, "--out", out, "--json", *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir())[-3:] == ["report.html", "report.json", "report.md"]
    return json.loads(result.stdout), json.loads((out / "report.json").read_text())


def test_attack_out_image_report_in_the_browser(browser, image_run, pages):
    out = pages / "attack-image"
    out.mkdir()
    (out / "stale.txt").write_text("an earlier report")  # replaced, as evaluate --out replaces its folder
    printed, report = attack_out(image_run, out, "--attack", "pgd", "--samples", "40")
    assert report["result"] == printed and not (out / "stale.txt").exists()
    assert report["plots"] == ["plots/adversarial_examples.png"] and report["config"]["eps"] == 0.1
    page, tables = open_page(browser, out / "report.html", pages / "attack-image.png")
    accuracy = table_with(tables, "checkpoint", "epoch", "clean", "pgd")
    assert accuracy[1][2:] == [pct(printed["clean_accuracy"]), pct(printed["adversarial_accuracy"])]
    assert f"adversarial accuracy {pct(printed['adversarial_accuracy'])}" in page.inner_text("body")
    assert page.title() == f"ssmdefense attack: pgd on {image_run / 'best'}"
    assert page.eval_on_selector_all("img", "els => els.map(i => i.alt)") == ["Adversarial examples"]
    assert not list(pages.glob(".attack-image*"))  # no temporary folder or lock left beside it


def test_attack_out_audio_report_plays_the_attacks_clips(browser, audio_run, pages):
    out = pages / "attack-audio"
    printed, report = attack_out(audio_run, out, "--attack", "pgd", "--samples", "6", "-p", "max_iter=3")
    examples = report["examples"]
    assert examples and (out / examples[0]["clean_wav"]).is_file() and (out / examples[0]["png"]).is_file()
    page, tables = open_page(browser, out / "report.html", pages / "attack-audio.png")
    assert_every_player_loads_its_clip(page, out, examples)
    assert "Listen: examples (pgd on best)" in page.inner_text("#examples")
    accuracy = table_with(tables, "checkpoint", "epoch", "clean", "pgd")
    assert accuracy[1][accuracy[0].index("pgd")] == pct(printed["adversarial_accuracy"])
    assert f"{printed['mean_snr_db']:.1f} dB" in page.inner_text("body")  # the perturbations' SNR


def test_evaluate_folder_report_html_in_the_browser(browser, audio_run, pages):
    out = pages / "evaluate-audio"
    args = ["--attacks", "fgsm", "--eps", "0.002", "--snr", "40,30", "--samples", "6", "--aa-samples", "0"]
    result = run("evaluate", "--checkpoint", audio_run, *args, "--no-checks", "--threads", "1", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert "plots/accuracy_vs_snr.png" in report["plots"]
    page, tables = open_page(browser, out / "report.html", pages / "evaluate-audio.png")
    assert page.eval_on_selector_all("img", "els => els.length") == len(report["plots"])
    accuracy = table_with(tables, "checkpoint", "epoch", "clean", "fgsm")
    best = report["best"]
    assert accuracy[1][:4] == [
        "best",
        str(best["epoch"]),
        pct(best["clean_accuracy"]),
        pct(best["robust_accuracy"]["fgsm"]),
    ]
    snr = table_with(tables, "checkpoint", "snr-pgd 40 dB", "snr-pgd 30 dB")
    assert snr[1][1:3] == [pct(p["accuracy"]) for p in best["audio"]["snr_curve"]]


@pytest.mark.parametrize(
    "command, out, message",
    [
        ("attack", "{tmp}/missing/report", "does not exist"),
        ("attack", "{tmp}/file.txt", "is a file, not a directory"),
        ("attack", "{run}", "holds checkpoints"),
        ("evaluate", "{tmp}/file.txt", "is a file, not a directory"),
        ("evaluate", "{run}", "holds checkpoints"),
    ],
)
def test_bad_report_out_exits_2_with_one_line_and_writes_nothing(image_run, tmp_path, command, out, message):
    (tmp_path / "file.txt").write_text("kept")
    before = sorted(p.name for p in image_run.iterdir())
    out = out.format(tmp=tmp_path, run=image_run)
    what = ["--attack", "fgsm"] if command == "attack" else ["--attacks", "fgsm", "--aa-samples", "0", "--no-checks"]
    result = run(command, "--checkpoint", image_run, *what, "--samples", "5", "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Invalid value for '--out'") and message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"] and (tmp_path / "file.txt").read_text() == "kept"
    assert sorted(p.name for p in image_run.iterdir()) == before


def test_attack_out_from_python_checks_the_path_and_leaves_nothing_on_failure(image_run, tmp_path, monkeypatch):
    from ssmdefense.experiment import AttackConfig, OptionError, attack_checkpoint

    with pytest.raises(OptionError, match="out: directory .*missing does not exist"):
        attack_checkpoint(AttackConfig(checkpoint=image_run, attack="fgsm", out=str(tmp_path / "missing" / "r")))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("ssmdefense.evaluation.attack_report.write_report", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        attack_checkpoint(checkpoint=image_run, attack="fgsm", samples=5, out=tmp_path / "r")
    assert list(tmp_path.iterdir()) == []
