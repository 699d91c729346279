"""Tests of harness.config: building, type and range checks, the config hash, JSON and TOML."""

from __future__ import annotations

import json
import re

import pytest

from harness.config import (RunConfig, build_config, config_from_json, read_recipe, read_settings_file, recipe_names,
                            valid_keys)
from harness.errors import HarnessError


def test_defaults_build_and_validate():
    config = build_config({})
    assert config == RunConfig()
    assert (config.model.model, config.data.dataset, config.train.epochs, config.train.batch_size) == (
        "lenet5", "mnist-sample", 3, 64)
    assert (config.backend, config.device) == ("pytorch", "cpu")


def test_flat_settings_land_in_their_sections():
    config = build_config({"model": "vgg11", "pool": "avg", "dataset": "cifar10", "augment": True,
                           "limit_train": 100, "epochs": 2, "optimizer": "adam", "learning_rate": 3e-4,
                           "backend": "mindspore", "device": "gpu"})
    assert (config.model.model, config.model.pool, config.model.activation) == ("vgg11", "avg", None)
    assert (config.data.dataset, config.data.augment, config.data.limit_train) == ("cifar10", True, 100)
    assert (config.train.epochs, config.train.optimizer, config.train.learning_rate) == (2, "adam", 3e-4)
    assert (config.backend, config.device) == ("mindspore", "gpu")
    assert config.flat()["learning_rate"] == 3e-4 and set(config.flat()) == set(valid_keys())


def test_numbers_are_coerced_where_lossless():
    config = build_config({"learning_rate": 1, "epochs": 2.0, "limit_test": None})
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.train.epochs == 2 and isinstance(config.train.epochs, int)
    assert config.data.limit_test is None


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(HarnessError) as error:
        build_config({"lr": 0.1, "epochs": 1})
    message = str(error.value)
    assert message.startswith("unknown setting(s) lr; valid settings: model, activation, pool, init, init_ulps, "
                              "dataset")
    assert all(key in message for key in ("batch_size", "learning_rate", "final_div_factor", "backend", "device"))


@pytest.mark.parametrize(("settings", "message"), [
    ({"epochs": "abc"}, "setting epochs='abc' is not int"),
    ({"init_ulps": 101}, "init_ulps=101 is out of range; expected 0..100"),
    ({"batch_size": 1.5}, "setting batch_size=1.5 is not int"),
    ({"epochs": True}, "setting epochs=True is not int"),
    ({"nesterov": "yes"}, "setting nesterov='yes' is not a boolean"),
    ({"nesterov": 1}, "setting nesterov=1 is not a boolean"),
    ({"learning_rate": "0.1"}, "setting learning_rate='0.1' is not float"),
    ({"learning_rate": False}, "setting learning_rate=False is not float"),
    ({"optimizer": 3}, "setting optimizer=3 is not str"),
    ({"epochs": None}, "setting epochs cannot be empty"),
])
def test_wrong_types_are_rejected(settings, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        build_config(settings)


@pytest.mark.parametrize(("settings", "message"), [
    ({"epochs": 0}, "epochs=0 is out of range; expected 1..10000"),
    ({"batch_size": 0}, "batch_size=0 is out of range; expected 1..65536"),
    ({"learning_rate": 0}, "learning_rate=0.0 is out of range"),
    ({"learning_rate": -0.1}, "learning_rate=-0.1 is out of range"),
    ({"momentum": 1.0}, "momentum=1.0 is out of range; expected 0 <= momentum < 1"),
    ({"nesterov": True, "momentum": 0.0}, "nesterov needs momentum > 0 and dampening 0"),
    ({"nesterov": True, "momentum": 0.0}, "momentum=0.0"),
    ({"nesterov": True, "dampening": 0.1}, "dampening=0.1"),
    ({"weight_decay": -1e-4}, "weight_decay=-0.0001 is negative"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; expected one of: sgd, adam, adamw"),
    ({"schedule": "linear"}, "unknown schedule 'linear'; expected one of: constant, step, multistep, cosine, onecycle"),
    ({"fit": "crop"}, "unknown fit 'crop'; expected one of: auto, pad, resize"),
    ({"limit_train": 0}, "limit_train=0 must be >= 1"),
    ({"pct_start": 1.0}, "onecycle needs 0 < pct_start < 1"),
    ({"gamma": 0.0}, "step schedule needs step_size >= 1 and 0 < gamma <= 1"),
])
def test_out_of_range_values_are_rejected_naming_the_value(settings, message):
    with pytest.raises(HarnessError) as error:
        build_config(settings)
    assert message in str(error.value)


def test_nesterov_with_momentum_builds():
    assert build_config({"nesterov": True, "momentum": 0.9}).train.nesterov is True


# One valid non-default value per setting that decides the numbers.
CHANGES = {
    "model": "vgg11", "activation": "tanh", "pool": "avg", "init": "normal0.02", "init_ulps": 1,
    "dataset": "cifar10", "fit": "pad", "augment": True, "limit_train": 100, "limit_test": 50,
    "epochs": 4, "batch_size": 32, "optimizer": "adam", "learning_rate": 0.02, "momentum": 0.8,
    "dampening": 0.1, "nesterov": True, "weight_decay": 5e-4, "decay_scope": "weights", "beta1": 0.8,
    "beta2": 0.99, "eps": 1e-7, "schedule": "onecycle", "step_size": 2, "gamma": 0.5, "min_lr": 1e-4,
    "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0, "seed": 1, "milestones": (3,),
}
NEEDS = {"milestones": {"schedule": "multistep"}}  # a setting valid only beside another


def test_config_hash_ignores_backend_and_device():
    base = build_config({"epochs": 2})
    moved = build_config({"epochs": 2, "backend": "mindspore", "device": "gpu"})
    assert base != moved and base.config_hash == moved.config_hash
    assert len(base.config_hash) == 16 and int(base.config_hash, 16) >= 0


def test_config_hash_changes_with_every_other_setting():
    assert set(CHANGES) == set(valid_keys()) - {"backend", "device"}  # a new setting must be listed here
    base = build_config({})
    hashes = {}
    for key, value in CHANGES.items():
        changed = build_config({key: value, **NEEDS.get(key, {})})
        assert changed.flat()[key] == value
        hashes[key] = changed.config_hash
        assert hashes[key] != base.config_hash, key
    assert len(set(hashes.values())) == len(CHANGES)  # no two settings collide either


def test_json_round_trip():
    config = build_config({**{k: v for k, v in CHANGES.items() if k not in ("dampening", "milestones")},
                           "backend": "mindspore"})
    again = config_from_json(json.dumps(config.to_dict()))
    assert again == config and again.config_hash == config.config_hash
    assert again.data.limit_train == 100 and again.backend == "mindspore"


def test_toml_settings_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = "lenet5-lecun"\nepochs = 5\nlearning_rate = 1\nnesterov = true\n'
                    '[about]\ntutorial = "LeCun 1998"\nurl = "https://example.org"\n')
    settings = read_settings_file(path)
    assert settings == {"model": "lenet5-lecun", "epochs": 5, "learning_rate": 1, "nesterov": True}
    config = build_config(settings)
    assert (config.model.model, config.train.epochs, config.train.learning_rate) == ("lenet5-lecun", 5, 1.0)


def test_settings_file_errors(tmp_path):
    with pytest.raises(HarnessError, match="does not exist; pass the path of a .toml file"):
        read_settings_file(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(HarnessError, match="cannot read config file .*bad.toml.*expected flat TOML keys"):
        read_settings_file(bad)


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_and_names_its_schedule(name):
    settings = read_recipe(name)
    assert "schedule" in settings  # a recipe keeps its tutorial's schedule when the harness default changes
    assert build_config(settings).train.schedule == settings["schedule"]
