"""`tune`: the space checked against the spec's domains before anything runs, the pruning hook on
a real Optuna study, and the make target. The real multi-worker study (two processes on a
PostgreSQL storage, one of them killed mid-trial) is in tests/test_postgres.py."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO, run_cli

from pipelines.core.errors import UsageError
from pipelines.experiments.tune import PrunedTrial, Space, TrialHooks, default_study_name, label
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

SPACE = "learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5) batch_size=choice(64,128,256)"


def test_a_space_resolves_its_keys_like_set():
    space = Space.parse(get_spec("digits"), SPACE)
    assert space.keys() == ["train.learning_rate", "model.dropout", "train.batch_size"]
    (_, _, batch) = space.dimensions
    assert batch.kind == "choice" and batch.choices == (64, 128, 256)  # numbers, as the key holds them
    spec = space.apply(get_spec("digits"), {"train.learning_rate": 3e-3, "model.dropout": 0.25, "train.batch_size": 64})
    assert (spec.train.learning_rate, spec.model.params["dropout"], spec.train.batch_size) == (3e-3, 0.25, 64)
    assert label({"train.learning_rate": 0.0031234, "train.batch_size": 64}) == "learning_rate=0.00312 batch_size=64"


@pytest.mark.parametrize("usecase, space, message", [
    ("digits", "model.dropout=float(0,1.5)", "1.5 is outside model.dropout's domain (>= 0 and < 1)"),
    ("digits", "learning_rate=log(0,1e-2)", "log(a,b) needs a > 0"),
    ("digits", "learning_rate=float(1e-2,1e-4)", "the range is empty"),
    ("digits", "batch_size=float(32,256)", "train.batch_size is an integer"),
    ("digits", "epochs=int(0,3)", "0 is outside train.epochs's domain (>= 1)"),
    ("digits", "learnig_rate=log(1e-4,1e-2)", "unknown --set key 'learnig_rate'"),
    ("heart", "precision=choice(float32,mixed_bfloat16)", "unknown --set key 'precision' for heart"),  # the task never reads it
    ("digits", "schedule=choice(cosine,linear)", "train.schedule=linear: must be one of cosine, constant"),
    ("digits", "warmup_epochs=int(0,8)", "train.warmup_epochs=8: must be fewer than train.epochs=6"),
    ("digits", "dropout=uniform(0,1)", "unknown kind 'uniform'"),
    ("digits", "dropout=0.2", "expects KEY=KIND(...)"),
    ("digits", "dropout=float(0,0.2) model.dropout=float(0,0.3)", "names one setting twice"),
    ("digits", "", "--space is empty"),
])
def test_a_bad_space_fails_before_any_trial(usecase, space, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Space.parse(get_spec(usecase), space)


def test_the_cli_refuses_a_bad_space_in_one_line_exit_2(tmp_path):
    result = run_cli("tune", "digits", "--data", "sample", "--trials", "4", "--space", "model.dropout=float(0,1.5)",
                     env={"PIPELINES_MODELS_ROOT": str(tmp_path)}, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: --space model.dropout=float(0,1.5): 1.5 is outside")
    assert not (tmp_path / "optuna.db").exists()  # nothing was created


def test_the_study_name_follows_the_settings_and_the_space():
    spec = apply_overrides(get_spec("digits"), {"data.source": "sample"})
    space = Space.parse(spec, SPACE)
    assert default_study_name(spec, space) == default_study_name(spec, Space.parse(spec, SPACE))
    assert default_study_name(spec, space) != default_study_name(apply_overrides(spec, {"epochs": 2}), space)
    assert default_study_name(spec, space) != default_study_name(spec, Space.parse(spec, "learning_rate=log(1e-4,1e-2)"))


def test_the_epoch_hook_reports_to_optuna_and_prunes_a_poor_trial():
    import optuna

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = study.ask()
    for epoch, value in enumerate([0.5, 0.7, 0.9]):
        TrialHooks(good, "val_accuracy").epoch_end(epoch, {"val_accuracy": value, "loss": 1.0})
    study.tell(good, 0.9)
    poor = study.ask()
    hooks = TrialHooks(poor, "val_accuracy")
    hooks.epoch_end(0, {"loss": 2.0})  # no validation metric this epoch: nothing reported
    with pytest.raises(PrunedTrial, match="pruned after epoch 1: val_accuracy 0.1000") as pruned:
        hooks.epoch_end(0, {"val_accuracy": 0.1})
    assert pruned.value.run_status == "KILLED"  # its MLflow run ends KILLED, not FAILED
    assert study.trials[1].intermediate_values == {0: 0.1}


def test_make_target_passes_budget_space_and_options():
    result = subprocess.run(["make", "-n", "tune-digits", "TRIALS=8", "DATA=sample", "EPOCHS=2",
                             "STORAGE=postgresql://u@127.0.0.1:1/optuna"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    command = " ".join(result.stdout.split())
    assert ("-m pipelines tune digits --trials 8 --space 'learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5)' "
            "--storage 'postgresql://u@127.0.0.1:1/optuna'") in command
    assert "--data sample" in command and "--set epochs=2" in command
    refused = subprocess.run(["make", "tune-digits"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "give the budget" in refused.stderr
