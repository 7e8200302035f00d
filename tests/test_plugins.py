"""Plugin loading and the name registries, with fake distributions (nothing installed)."""

import json
import re
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

import ssmdefense as sd
from ssmdefense import hookspecs, plugins
from ssmdefense.cli import cli


class FakeDist:
    def __init__(self, name, version="1.0"):
        self.name, self.version = name, version


class FakeEntryPoint:
    """What ``importlib.metadata.entry_points(group=...)`` yields, for a module in sys.modules."""

    def __init__(self, name, module_name, dist="ssmdefense-fake"):
        self.name, self.value, self.group = name, module_name, "ssmdefense"
        self.dist = FakeDist(dist)

    def load(self):
        __import__(self.value)
        return sys.modules[self.value]


@pytest.fixture
def fake_plugins(monkeypatch):
    """Install fake plugin modules + entry points; restore the real plugin state afterwards."""
    added = []

    monkeypatch.delenv("SSMDEFENSE_LOAD_PLUGINS", raising=False)  # conftest.py sets it empty: load these

    def install(entry_points, modules):
        for name, module in modules.items():
            monkeypatch.setitem(sys.modules, name, module)
            added.append(name)
        real = plugins.importlib.metadata.entry_points

        def fake_entry_points(**select):
            if select.get("group") == "ssmdefense":
                return list(entry_points)
            return real(**select)

        monkeypatch.setattr(plugins.importlib.metadata, "entry_points", fake_entry_points)
        plugins.reset()

    yield install
    plugins.reset()


def make_module(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, sd.hookimpl(fn))
    return module


def test_builtins_are_registered():
    assert "s4d" in sd.list_models()
    assert {"fgsm", "pgd"} <= set(sd.list_attacks())
    assert {"none", "pgd-at", "ads"} <= set(sd.list_defenses())
    assert {"mnist-5k", "digits"} <= set(sd.list_datasets())


def test_unknown_name_lists_known_ones():
    with pytest.raises(sd.UnknownNameError, match=r"unknown attack 'nope'; known: .*fgsm, .*pgd"):
        sd.get_attack("nope", None)
    with pytest.raises(sd.UnknownNameError, match="unknown dataset 'cifar-99'; known: cifar10, digits"):
        sd.load_dataset("cifar-99")


def test_third_party_plugin_is_found_through_entry_points(fake_plugins):
    class FakeAttack:
        def __init__(self, estimator, eps):
            self.estimator, self.eps = estimator, eps

        def generate(self, x, y=None):
            return x

    def register_attacks(register):
        register("fake-attack", lambda estimator, *, eps=0.1: FakeAttack(estimator, eps), "a fake attack")

    def register_commands(cli):
        import click

        @cli.command(name="hello-fake")
        def hello():
            click.echo("hello from a plugin")

    fake_plugins(
        [FakeEntryPoint("fake", "fake_plugin_mod")],
        {
            "fake_plugin_mod": make_module(
                "fake_plugin_mod", register_attacks=register_attacks, register_commands=register_commands
            )
        },
    )
    attack = sd.get_attack("fake-attack", "est", eps=0.5)
    assert (attack.estimator, attack.eps) == ("est", 0.5)
    with pytest.raises(sd.SSMDefenseError, match="unknown parameter.*accepted: eps"):
        sd.get_attack("fake-attack", "est", epsilon=0.5)
    info = {row["name"]: row for row in plugins.plugin_info()}
    assert info["fake"]["distribution"] == "ssmdefense-fake"
    assert info["fake"]["hooks"] == ["register_attacks", "register_commands"]
    result = CliRunner().invoke(cli, ["attacks", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["fake-attack"]["source"] == "fake" and rows["pgd"]["source"] == "ssmdefense.attacks.pgd"
    # register_commands: the plugin's command is reachable from a fresh root group
    from ssmdefense.cli import RootGroup

    root = RootGroup(name="ssmdefense")
    result = CliRunner().invoke(root, ["hello-fake"])
    assert result.output.strip() == "hello from a plugin"


def test_duplicate_name_names_both_sources(fake_plugins):
    def register_models(register):
        register("s4d", lambda d_input, n_classes: None, "an impostor")

    fake_plugins(
        [FakeEntryPoint("impostor", "impostor_mod")],
        {"impostor_mod": make_module("impostor_mod", register_models=register_models)},
    )
    with pytest.raises(
        sd.DuplicateNameError,
        match="'s4d' is registered twice: by plugin 'ssmdefense.zoo.s4d' and by plugin 'impostor'",
    ):
        sd.list_models()


def test_broken_plugin_is_reported_and_the_rest_works(fake_plugins):
    def register_datasets(register):
        register("fake-data", lambda: "data", "fine")

    broken = FakeEntryPoint("broken", "broken_plugin_mod_that_does_not_exist", dist="ssmdefense-broken")
    fake_plugins(
        [broken, FakeEntryPoint("fine", "fine_mod")],
        {"fine_mod": make_module("fine_mod", register_datasets=register_datasets)},
    )
    assert "fake-data" in sd.list_datasets()
    assert "pgd" in sd.list_attacks()
    errors = plugins.load_errors()
    assert [e["name"] for e in errors] == ["broken"]
    assert "ModuleNotFoundError" in errors[0]["error"]
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["broken"]["error"].startswith("ModuleNotFoundError")
    assert rows["fine"]["error"] is None
    # other commands still run
    assert CliRunner().invoke(cli, ["datasets", "--json"]).exit_code == 0


def test_a_misspelt_hook_leaves_its_plugin_out_with_a_clear_error(fake_plugins, caplog):
    def register_model(register):  # the spec is register_models: pluggy alone would never call it
        register("never-seen", lambda: None, "")

    def register_datasets(register):
        register("fake-data", lambda: "data", "fine")

    fake_plugins(
        [FakeEntryPoint("typo", "typo_mod", dist="ssmdefense-typo"), FakeEntryPoint("fine", "fine_mod")],
        {
            "typo_mod": make_module("typo_mod", register_model=register_model, register_datasets=register_datasets),
            "fine_mod": make_module("fine_mod", register_datasets=lambda register: register("other", lambda: 0, "")),
        },
    )
    with caplog.at_level("WARNING", logger="ssmdefense"):
        errors = plugins.load_errors()
    assert [(e["name"], e["distribution"]) for e in errors] == [("typo", "ssmdefense-typo")]
    assert errors[0]["error"] == (
        "PluginValidationError: unknown hook 'register_model' (did you mean 'register_models'?)"
    )
    assert "plugin 'typo' is left out: unknown hook 'register_model'" in caplog.text
    assert "fake-data" not in sd.list_datasets() and "other" in sd.list_datasets()  # left out whole; the rest works
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)}
    assert rows["typo"]["error"].startswith("PluginValidationError: unknown hook 'register_model'")


def test_an_art_attack_class_registered_as_it_is_takes_its_own_parameters(fake_plugins, digits):
    """ART declares an attack's keywords in ``attack_params`` (positional-or-keyword in ``__init__``)."""
    from art.attacks.evasion import ProjectedGradientDescent

    fake_plugins(
        [FakeEntryPoint("artpgd", "artpgd_mod")],
        {
            "artpgd_mod": make_module(
                "artpgd_mod",
                register_attacks=lambda register: register("art-pgd-raw", ProjectedGradientDescent, "ART's PGD"),
            )
        },
    )
    body = sd.build_model("s4d", d_input=8, n_classes=10, d_model=16, n_layers=1)
    clf = sd.SSMClassifier(body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0.0, 1.0))
    attack = sd.get_attack("art-pgd-raw", clf, eps=0.05, eps_step=0.01, max_iter=3, verbose=False)
    assert isinstance(attack, ProjectedGradientDescent) and attack.max_iter == 3
    x = digits.x_test[:8]
    assert np.abs(attack.generate(x) - x).max() <= 0.05 + 1e-6
    with pytest.raises(sd.SSMDefenseError, match=r"got unknown parameter\(s\) epsilon; accepted: .*eps, eps_step"):
        sd.get_attack("art-pgd-raw", clf, epsilon=0.1)


def test_env_switch_limits_third_party_plugins(fake_plugins, monkeypatch):
    def register_datasets(register):
        register("fake-data", lambda: "data", "fine")

    fake_plugins(
        [FakeEntryPoint("fine", "fine_mod")], {"fine_mod": make_module("fine_mod", register_datasets=register_datasets)}
    )
    monkeypatch.setenv("SSMDEFENSE_LOAD_PLUGINS", "")
    plugins.reset()
    assert "fake-data" not in sd.list_datasets()
    assert "digits" in sd.list_datasets()  # built-ins always load
    monkeypatch.setenv("SSMDEFENSE_LOAD_PLUGINS", "fine")
    plugins.reset()
    assert "fake-data" in sd.list_datasets()


def test_a_plugin_dataset_that_only_implements_the_lazy_protocol_trains(fake_plugins, tmp_path):
    """Not our LazyDataset, no arrays: train/test item datasets, their labels and the settings."""
    import torch

    class Items(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return torch.from_numpy(self.x[i]), int(self.y[i])

    class Lazy:  # the members of contracts.LazyData, and one optional (eps)
        def __init__(self, data):
            self.train, self.y_train = Items(data.x_train, data.y_train), data.y_train
            self.test, self.y_test = Items(data.x_test, data.y_test), data.y_test
            self.input_shape, self.nb_classes, self.clip_values = data.input_shape, 10, (0.0, 1.0)
            self.sequence, self.eps = "rows", 0.05

    from ssmdefense.api import load_dataset_as_is

    digits = load_dataset_as_is("digits")
    fake_plugins(
        [FakeEntryPoint("lazy", "lazy_mod")],
        {
            "lazy_mod": make_module(
                "lazy_mod", register_datasets=lambda register: register("lazy-digits", lambda: Lazy(digits), "")
            )
        },
    )
    data = sd.load_dataset("lazy-digits")
    assert type(data).__name__ == "LazyDataset" and data.eps == 0.05 and data.name == "lazy-digits"
    assert data.validation["source"] == "carved" and len(data.y_val) + len(data.y_train) == len(digits.y_train)
    out = tmp_path / "run"
    args = ["train", "--dataset", "lazy-digits", "--epochs", "2", "--aa-samples", "0", "--eval-samples", "64", "-q"]
    small = ["-m", "d_model=16", "-m", "n_layers=1"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), *small])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["eps"] == 0.05 and report["best"]["clean_accuracy"] > 0.3  # it learned (chance 0.1)
    # as it is (no split carved: the loader's object itself reaches the workflows), streamed
    as_is = tmp_path / "as-is"
    result = CliRunner().invoke(cli, [*args, "--select-on", "test", "--out", str(as_is), *small])
    assert result.exit_code == 0, result.output
    assert json.loads((as_is / "report.json").read_text())["best"]["clean_accuracy"] > 0.3


def test_plugin_dataset_brings_its_own_input_kind(fake_plugins, tmp_path):
    """A dataset of (F, T) feature matrices with its own sequence mode trains, saves and loads."""
    import numpy as np
    import torch

    from ssmdefense.data.base import Dataset

    class Columns(torch.nn.Module):
        def __init__(self, input_shape, *, scale: float = 1.0):
            super().__init__()
            if len(input_shape) != 2:
                raise ValueError(f"columns needs (F, T) input; got {tuple(input_shape)}")
            self.L, self.D = input_shape[1], input_shape[0]
            self.scale, self.params = scale, {"scale": scale}

        def forward(self, x):  # (N F T)
            return x.transpose(1, 2) * self.scale  # (N T F)

    def register_sequences(register):
        register("columns", Columns, "feature matrices (F, T): T steps of F features")

    def register_datasets(register):
        def load():
            rng = np.random.default_rng(0)
            y = np.arange(200) % 2
            x = np.clip(rng.normal(size=(200, 3, 12)) * 0.2 + 0.4 * (2 * y[:, None, None] - 1), -1, 1)
            return Dataset(
                "fake-spectra",
                x[:160],
                y[:160],
                x[160:],
                y[160:],
                nb_classes=2,
                clip_values=(-1.0, 1.0),
                sequence="columns",
                eps=0.05,
                defaults={"epochs": 2, "eval_samples": 30},
            )

        register("fake-spectra", load, "two classes of 3 x 12 feature matrices")

    fake_plugins(
        [FakeEntryPoint("spectra", "spectra_mod")],
        {
            "spectra_mod": make_module(
                "spectra_mod", register_sequences=register_sequences, register_datasets=register_datasets
            )
        },
    )
    assert sd.sequence_dims((3, 12), "columns") == (12, 3)
    with pytest.raises(sd.SSMDefenseError, match="columns needs"):
        sd.sequence_dims((1, 3, 12), "columns")
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(cli, ["sequences", "--json"]).output)}
    assert rows["columns"]["source"] == "spectra" and rows["mel"]["source"] == "ssmdefense.models.audio"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--dataset",
            "fake-spectra",
            "-q",
            "-m",
            "d_model=8",
            "-m",
            "n_layers=1",
            "-m",
            "scale=2.0",
            "-p",
            "lr=0.01",
            "--out",
            tmp_path / "run",
        ],
    )
    assert result.exit_code == 0, result.output
    # the final evaluation's second process, a fresh interpreter, lacks this test's plugin and cannot
    # load the checkpoint: its part is done here instead
    assert "could not evaluate the best checkpoint" in result.output and "evaluating it here" in result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["sequence"], config["sequence_params"], config["eps"]) == ("columns", {"scale": 2.0}, 0.05)
    assert (config["epochs"], config["eval_samples"]) == (2, 30)  # the dataset's defaults
    assert "scale" not in config["model_params"]
    clf = sd.load(tmp_path / "run" / "best", device_type="cpu")
    assert clf.serialiser.scale == 2.0 and clf.input_shape == (3, 12)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["best"]["clean_accuracy"] > 0.9


@pytest.mark.parametrize("kind", ["models", "attacks", "defenses", "datasets", "sequences", "plugins"])
def test_listing_commands_print_json(kind):
    result = CliRunner().invoke(cli, [kind, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and all("name" in r for r in rows)
    table = CliRunner().invoke(cli, [kind])
    assert table.exit_code == 0 and rows[0]["name"] in table.output


def test_every_hook_is_tested_and_documented():
    """As datasette does: a new hook needs a test here and a section in docs/plugins.md."""
    from pathlib import Path

    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert sorted(hooks) == [
        "register_attacks",
        "register_commands",
        "register_datasets",
        "register_defenses",
        "register_models",
        "register_sequences",
    ]
    tests_text = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    docs = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    for hook in hooks:
        assert f"def {hook}(" in tests_text, f"{hook} has no test"
        assert f"### {hook}" in docs, f"{hook} is not documented in docs/plugins.md"


def test_plugin_models_and_defenses_work_through_the_api(fake_plugins, digits):
    import torch

    from ssmdefense.defenses.pgd_at import PGDATTrainer
    from ssmdefense.models import SequenceClassifier

    def register_models(register):
        def linear_mixer_model(d_input, n_classes, *, d_model=16):
            return SequenceClassifier(d_input, n_classes, lambda h: torch.nn.Linear(h, h), d_model=d_model, n_layers=1)

        register("linear-mixer", linear_mixer_model, "per-step linear mixer")

    def register_defenses(register):
        class HalfEpsTrainer(PGDATTrainer):
            name = "half-eps-at"

        register("half-eps-at", HalfEpsTrainer, "PGD-AT subclass")

    fake_plugins(
        [FakeEntryPoint("extra", "extra_mod")],
        {"extra_mod": make_module("extra_mod", register_models=register_models, register_defenses=register_defenses)},
    )
    body = sd.build_model("linear-mixer", d_input=8, n_classes=10, d_model=8)
    clf = sd.SSMClassifier(
        body, input_shape=(1, 8, 8), nb_classes=10, sequence="rows", clip_values=(0, 1), device_type="cpu"
    )
    trainer = sd.get_defense("half-eps-at", clf, eps=0.05, max_iter=2, verbose=False)
    history = trainer.fit(digits.x_train[:64], digits.y_train[:64], nb_epochs=1)
    assert len(history) == 1 and history[0]["train_loss"] > 0
    with pytest.raises(sd.SSMDefenseError, match="unknown parameter.*accepted: .*max_iter"):
        sd.get_defense("half-eps-at", clf, max_iters=3)


def test_a_class_missing_a_protocol_method_is_refused_when_the_plugin_registers(fake_plugins):
    class NotATrainer:  # an ART trainer needs fit and get_classifier
        def fit(self, x, y, **kwargs):
            pass

    def register_defenses(register):
        register("fine-defense", sd.TrainingLoop, "registered first, left out with the rest")
        register("half-trainer", NotATrainer, "lacks get_classifier")

    fake_plugins(
        [FakeEntryPoint("half", "half_mod")], {"half_mod": make_module("half_mod", register_defenses=register_defenses)}
    )
    names = sd.list_defenses()  # the others keep working; none of this plugin's defenses is half-added
    assert "pgd-at" in names and "fine-defense" not in names and "half-trainer" not in names
    why = r"plugin 'half': defense 'half-trainer' \(NotATrainer\) lacks get_classifier"
    with pytest.raises(sd.UnknownNameError, match=r"unknown defense 'half-trainer'; .*" + why):
        sd.get_defense("half-trainer", None)
    info = {row["name"]: row for row in plugins.plugin_info()}
    assert re.search(why, info["half"]["error"])


def test_a_built_object_missing_a_member_is_refused_naming_the_plugin(fake_plugins):
    class NoLength:  # a sequence mode needs L, D, params and forward
        D, params = 3, {}

        def forward(self, x):
            return x

    def register_sequences(register):
        register("broken-mode", lambda input_shape: NoLength(), "no L")

    fake_plugins(
        [FakeEntryPoint("modes", "modes_mod")],
        {"modes_mod": make_module("modes_mod", register_sequences=register_sequences)},
    )
    with pytest.raises(sd.SSMDefenseError, match=r"plugin 'modes': sequence mode 'broken-mode' \(NoLength\) lacks L"):
        sd.build_serialiser("broken-mode", (1, 8, 8))


def test_factories_with_kwargs_get_what_defend_passes_and_only_own_errors_are_wrapped(fake_plugins):
    class PlainTrainer:
        def __init__(self, classifier, **_):  # ignores eps, seed, batch_size, eval_samples, verbose
            self.classifier = classifier

        def fit(self, x, y, **kwargs):
            pass

        def get_classifier(self):
            return self.classifier

    def buggy(estimator, *, eps=0.1):
        return len(eps)  # a bug in the plugin: TypeError from inside the factory

    def register_defenses(register):
        register("plain", PlainTrainer, "a plain trainer")

    def register_attacks(register):
        register("buggy", buggy, "raises a TypeError")

    fake_plugins(
        [FakeEntryPoint("plain", "plain_mod")],
        {"plain_mod": make_module("plain_mod", register_defenses=register_defenses, register_attacks=register_attacks)},
    )
    assert plugins.registry("defenses").accepted_params("plain") is None
    trainer = sd.get_defense("plain", "clf", eps=0.1, seed=0, batch_size=64, eval_samples=None, verbose=False)
    assert trainer.get_classifier() == "clf"
    with pytest.raises(TypeError, match="has no len") as info:  # a bug keeps its type and traceback
        sd.get_attack("buggy", "clf")
    assert not isinstance(info.value, sd.SSMDefenseError)
    assert any(entry.name == "buggy" for entry in info.traceback)
    with pytest.raises(sd.SSMDefenseError, match="attack 'buggy': .*positional"):  # the call does not fit
        plugins.registry("attacks").create("buggy", "clf", "extra")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["attacks", "--json"],
        ["defenses", "--json"],
        ["datasets", "--json"],
        ["sequences", "--json"],
        ["plugins", "--json"],
    ],
)
def test_help_and_listings_import_no_training_code(args):
    """The built-ins register from a table (``ssmdefense.builtins``): naming them imports nothing heavy."""
    import subprocess

    code = (
        "import sys; from click.testing import CliRunner; from ssmdefense.cli import cli; "
        f"r = CliRunner().invoke(cli, {args!r}); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'art', 'numba', 'torchaudio', 'ssmdefense.defenses') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
