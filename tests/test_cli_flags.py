"""The CLI's flags against the library: every config flag sets an ExperimentConfig field, every field has a
way in, and every default a flag shows is the library's own."""

import argparse
import dataclasses
import inspect
import re

import pytest

from msir_keras.cli.flags import ALIASES, RUN_MODEL, RUN_RECIPE, config_flags, dest, experiment_config
from msir_keras.cli.parser import build_parser
from msir_keras.config import ExperimentConfig
from msir_keras.detector import HOPS_PER_WINDOW, Detector
from msir_keras.features import DEFAULT_CHECKPOINT, LLDConfig, LogMelConfig, Wav2Vec2
from msir_keras.reproduce import PAPER_ZETAS

EXPERIMENT_COMMANDS = ("run", "train", "tune", "reproduce")

# Flags that set a field through a conversion in `experiment_config` (or a command's fixed values).
CONVERTED = {
    "--corpus": "corpus",
    "--root": "root",
    "--recipe": "recipe",
    "--upstream": "wav2vec2",  # 'off' is None; a checkpoint given adds the w2v branch
    "--wav2vec2": "wav2vec2",  # --upstream's older name
    "--dropout": "model_options",  # model_options["dropout"]
    "--logmel-deltas": "logmel",  # logmel["deltas"]
    "--lld-deltas": "lld",  # lld["deltas"]
    "--branches": "branches",  # a comma list
    "--emotion": "targets",  # train, tune: repeated, one detection target each
    "--emotions": "targets",  # reproduce: a comma list of targets (its class set stays the paper's four)
    "--model": "model",  # run: fusion or msir only
    "--split": "split",  # reproduce: its default depends on the corpus
    "--no-baselines": "baselines",  # run
    "--tune": "tune",  # train
    "--space": "tune",  # tune
    "--tune-lr": "tune",  # reproduce: the paper's learning-rate grid
}
# Flags of the experiment commands that set no field of the config.
NOT_FIELDS = {
    "-h", "--help", "--debug",
    "--out", "--overwrite", "--verbose",  # where and how a command writes, not what the experiment is
    "--set",  # KEY=VALUE for any field: the way into every field below
    "--config",  # a whole config.json to start from
    "--rows", "--rows-file", "--zetas", "--report-only",  # reproduce's plan: rows of runs, not one config
}
# Fields no flag sets: --set reaches them, and the recipes (--recipe) set most of them.
SET_ONLY = {
    "speeds": "speed perturbation, a list of factors: --set speeds=[0.9,1.1]",
    "label_smoothing": "a recipe's training setting",
    "lr_schedule": "a recipe's training setting",
    "clipnorm": "a recipe's training setting",
    "class_weights": "a recipe's training setting",
    "functionals": "the fused detector's, chosen on the training speakers unless set",
    "fusion_weight": "the fused detector's, chosen on the training speakers unless set",
    "inner_folds": "the fused detector's",
}
# Flags whose help describes the default in words, and the config value those words stand for.
DESCRIBED = {"max_folds": None, "wav2vec2_layer": None, "zeta": None, "max_trials": None, "savedmodel": True}


def _commands():
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(subparser):
    return {flag: action for action in subparser._actions for flag in action.option_strings}


def test_every_experiment_flag_sets_a_field_and_every_field_has_a_way_in():
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    table = {flag: field for flag, field, _ in config_flags(training=True)}
    table.update({alias: table[flag] for flag, aliases in ALIASES.items() for alias in aliases})
    assert set(table.values()) <= fields, set(table.values()) - fields
    assert set(CONVERTED.values()) <= fields, set(CONVERTED.values()) - fields
    commands = _commands()
    for name in EXPERIMENT_COMMANDS:
        unmapped = set(_options(commands[name])) - set(table) - set(CONVERTED) - NOT_FIELDS
        assert not unmapped, f"msir {name}: {sorted(unmapped)} set no known field; map them here"
    reached = set(table.values()) | set(CONVERTED.values())
    assert reached | set(SET_ONLY) == fields, f"no flag and not excluded: {sorted(fields - reached - set(SET_ONLY))}"
    assert not reached & set(SET_ONLY), f"excluded but they have a flag: {sorted(reached & set(SET_ONLY))}"


@pytest.mark.parametrize("command,recipe", [("train", "paper"), ("tune", "paper"), ("run", RUN_RECIPE),
                                            ("reproduce", "paper")])
def test_the_defaults_shown_are_the_configs(command, recipe):
    defaults = ExperimentConfig().with_recipe(recipe)
    options = _options(_commands()[command])
    for flag, field, spec in config_flags(training=command in ("train", "tune")):
        if flag not in options or (command == "reproduce" and flag == "--emotions"):
            continue
        action = options[flag]
        assert action.default is None, f"{flag}: a literal default would hide the config's"
        shown = re.search(r"\(default: (.*)\)$", action.help).group(1)
        if field in DESCRIBED:
            assert getattr(defaults, field) == DESCRIBED[field], f"{flag}: the help describes another default"
        else:
            assert shown == str(getattr(defaults, field)), f"{flag} shows {shown}, the config holds " \
                                                           f"{getattr(defaults, field)}"
    for flag, value in (("--wav2vec2", defaults.wav2vec2), ("--logmel-deltas", LogMelConfig().deltas),
                        ("--lld-deltas", LLDConfig().deltas), ("--recipe", recipe)):
        assert options[flag].default is None and options[flag].help.endswith(f"(default: {value})"), flag
    if "--zeta" in options:
        assert f"{ExperimentConfig().zeta_for('angry')} otherwise" in options["--zeta"].help


@pytest.mark.parametrize("command,recipe,fixed", [
    ("train", "paper", {}),
    ("run", RUN_RECIPE, dict(split="speakers", task="classification", model=RUN_MODEL, baselines=True)),
])
def test_no_flags_give_the_configs_defaults(command, recipe, fixed):
    parser = build_parser()
    args = parser.parse_args([command, "--corpus", "emodb", "--root", "x"])
    config = experiment_config(args, default_recipe=recipe, **fixed)
    expected = dataclasses.replace(ExperimentConfig(corpus="emodb", root="x").with_recipe(recipe), **fixed)
    assert config == expected
    # Each config flag given lands on its field.
    for flag, field, _ in config_flags(training=command == "train"):
        assert dest(flag) in vars(args), flag


def test_the_other_commands_defaults_are_the_librarys():
    commands = _commands()
    extract = _options(commands["extract"])
    assert extract["--store"].default == ExperimentConfig().store
    assert extract["--wav2vec2"].default == DEFAULT_CHECKPOINT == ExperimentConfig().wav2vec2
    assert extract["--logmel-deltas"].default == LogMelConfig().deltas
    assert extract["--lld-deltas"].default == LLDConfig().deltas
    assert extract["--batch-size"].default == inspect.signature(Wav2Vec2).parameters["batch_size"].default
    assert _options(commands["inspect"])["--emotions"].default == ExperimentConfig().emotions
    predict = _options(commands["predict"])
    assert predict["--threshold"].default == inspect.signature(Detector).parameters["threshold"].default
    # The batch size is left to the library: files and timeline windows have their own defaults.
    assert predict["--batch-size"].default is None
    for method in (Detector.predict, Detector.timeline):
        assert f"(default: {inspect.signature(method).parameters['batch_size'].default})" in predict["--batch-size"].help
    assert inspect.signature(Detector.timeline).parameters["hop"].default is None
    assert f"--window / {HOPS_PER_WINDOW}" in predict["--hop"].help
    reproduce = _options(commands["reproduce"])
    assert reproduce["--zetas"].default is None  # PAPER_ZETAS, named in the help
    assert ",".join(f"{z:g}" for z in PAPER_ZETAS) in reproduce["--zetas"].help
