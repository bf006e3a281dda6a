"""The late-fusion detector: its classifier against scikit-learn, its selection, its run folder."""

import dataclasses
import json

import keras
import numpy as np
import pandas as pd
import pytest
from keras_objects import run_layer_test

from msir_keras.features import baseline_extractor
from msir_keras.fusion import choose_weight, fit_functionals_classifier, inner_groups, select_functionals
from msir_keras.layers import FunctionalsClassifier


@pytest.fixture(scope="module")
def egemaps(emodb, emodb_store):
    """eGeMAPS functionals (N, 88), labels and speakers of EmoDB's four classes."""
    from msir_keras.corpora import FOUR_CLASSES, class_labels

    table = emodb.utterances
    extractor = baseline_extractor("egemaps")
    emodb_store.extract(table["path"], [extractor], workers=2)
    x = np.stack(emodb_store.load_many(table["path"].tolist(), extractor))
    return x, class_labels(table, list(FOUR_CLASSES)), table["speaker"].astype(str).to_numpy()


@pytest.mark.parametrize("classes", [4, 2])
def test_functionals_classifier_gives_scikit_learns_probabilities(egemaps, classes):
    x, y, speakers = egemaps
    if classes == 2:
        y = (y == 3).astype(int)  # sad against the rest: scikit-learn's binary regression (one coefficient row)
    train, test = speakers != "03", speakers == "03"
    names = [f"c{i}" for i in range(classes)]
    pipeline, layer = fit_functionals_classifier({"egemaps": x[train]}, y[train], ["egemaps"], 0.1, names)
    expected = pipeline.predict_proba(x[test])
    got = np.asarray(layer([x[test].astype(np.float32)]))
    assert got.shape == (test.sum(), classes)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_functionals_classifier_passes_the_layer_test(egemaps, tmp_path):
    x, y, _ = egemaps
    pipeline, fitted = fit_functionals_classifier({"egemaps": x[:200]}, y[:200], ["egemaps"], 0.1, list("abcd"))
    a, b = x[200:205, :40].astype(np.float32), x[200:205, 40:].astype(np.float32)
    output = run_layer_test(FunctionalsClassifier, {"inputs_names": ["a", "b"], "input_sizes": [40, 48],
                                                    "num_classes": 4}, args=([a, b],),
                            expected_output_shape=(5, 4), expected_non_trainable_weights=4, train=False,
                            prepare=lambda layer: layer.set_weights(fitted.get_weights()), tmp_path=tmp_path)
    # Two inputs concatenated in order are the one 88-dimensional input.
    np.testing.assert_allclose(output, pipeline.predict_proba(x[200:205]), atol=1e-5)


def test_inner_groups_deal_each_gender_across_groups():
    genders = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F", "14": "F"}
    groups = inner_groups(genders, genders, 2)
    assert sorted(sum(groups, [])) == sorted(genders)
    for group in groups:
        assert sorted(genders[s] for s in group) == ["F", "F", "M", "M"]
    assert inner_groups(["a", "b", "c"], {}, 3) == [["a"], ["b"], ["c"]]
    from msir_keras.features.base import ConfigError

    with pytest.raises(ConfigError, match="1 training speaker"):
        inner_groups(["a"], {}, 2)


def test_selection_chooses_by_held_out_speakers(egemaps):
    x, y, speakers = egemaps
    keep = np.isin(speakers, ["03", "08", "09", "10"])
    features = {"egemaps": x[keep], "compare": x[keep][:, :20]}
    chosen, c, scores, oof = select_functionals(features, y[keep], speakers[keep], 4, sets=("egemaps", "compare"),
                                                c_grid=(0.01, 1.0))
    assert set(scores) == {"egemaps C=0.01", "egemaps C=1", "compare C=0.01", "compare C=1"}
    assert scores[f"{chosen} C={c:g}"] == max(scores.values())
    assert oof.shape == (keep.sum(), 4) and np.allclose(oof.sum(axis=1), 1)
    # The weight: UAR of the mixture on the same utterances; ties go to the weight nearest 0.5.
    labels = np.array([0, 1, 0, 1])
    msir = np.array([[0.45, 0.55], [0.55, 0.45], [0.9, 0.1], [0.1, 0.9]])  # sure and right on the last two
    functionals = np.array([[0.9, 0.1], [0.1, 0.9], [0.45, 0.55], [0.55, 0.45]])  # on the first two
    weight, weight_scores = choose_weight(labels, msir, functionals, 2)
    assert weight_scores[0.0] == weight_scores[0.1] == weight_scores[1.0] == 0.5
    assert all(weight_scores[w] == 1.0 for w in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))
    assert weight == 0.5


def test_no_test_utterance_or_speaker_enters_any_selection(emodb, emodb_store, monkeypatch):
    """Every row MSIR trains or validates on, and every row the classifier and weight are chosen on, is a
    training row; the choices do not change when the test labels do."""
    from msir_keras import engine, fusion
    from msir_keras.config import ExperimentConfig
    from msir_keras.corpora import FOUR_CLASSES, class_labels, make_folds
    from msir_keras.data import FeatureSet

    table = emodb.utterances[emodb.utterances["speaker"].isin(["03", "08", "09", "10", "11", "13"])]
    table = table.groupby(["speaker", "label"]).head(3).reset_index(drop=True)
    config = ExperimentConfig(corpus="emodb", root="", model="fusion", preset="tiny", wav2vec2=None,
                              branches=("lld",), functionals="egemaps")
    extractors = config.extractors()
    emodb_store.extract(table["path"], list(extractors.values()))
    data = FeatureSet.from_store(emodb_store, table["path"].tolist(), extractors)
    fold = make_folds(table, "speakers", n_folds=3)[0]
    test_rows = set(fold.test.tolist())
    seen = {"msir": [], "functionals": [], "weight": []}

    def no_training(model, train, valid, config, seed=None, **options):  # selection only: no epochs needed
        return pd.DataFrame({"epoch": [0], "val_uar": [0.5]})

    real_train, real_select, real_weight = engine.train, fusion.select_functionals, fusion.choose_weight

    def spy_train(config, data, inner, *args, **kwargs):
        seen["msir"].append(set(inner.train.tolist()) | set(inner.validation.tolist()))
        return real_train(config, data, inner, *args, **kwargs)

    def spy_select(features, y, speakers, *args, **kwargs):
        seen["functionals"].append(set(speakers))
        return real_select(features, y, speakers, *args, **kwargs)

    def spy_weight(y, msir, functionals, *args, **kwargs):
        seen["weight"].append(len(y))
        return real_weight(y, msir, functionals, *args, **kwargs)

    monkeypatch.setattr(engine, "fit", no_training)
    monkeypatch.setattr(engine, "train", spy_train)
    monkeypatch.setattr(fusion, "select_functionals", spy_select)
    monkeypatch.setattr(fusion, "choose_weight", spy_weight)
    labels = class_labels(table, list(FOUR_CLASSES))
    chosen = []
    for test_labels in (labels[fold.test], np.roll(labels[fold.test], 1)):
        changed = labels.copy()
        changed[fold.test] = test_labels
        _, _, extra, selection = fusion.train_fused(config, table, data, fold, changed, list(FOUR_CLASSES),
                                                    "classification", log=lambda line: None)
        chosen.append(extra["chosen"])
    test_speakers = set(table["speaker"].iloc[fold.test])
    assert len(seen["msir"]) == 4 and all(not rows & test_rows for rows in seen["msir"])
    assert all(not speakers & test_speakers for speakers in seen["functionals"])
    train_rows = len(fold.train) + len(fold.validation)
    assert seen["weight"] == [train_rows, train_rows]
    assert not set(selection["speaker"]) & test_speakers and len(selection) == train_rows
    assert chosen[0] == chosen[1]


@pytest.mark.slow  # trains the session's fused run (two MSIR members, both SVMs): CI runs it
def test_fused_run_folder_holds_model_parts_baselines_and_selection(runs):
    run = runs["fusion"]
    metrics = json.loads((run / "metrics.json").read_text())
    (fold, figures), = metrics["folds"].items()
    assert metrics["model"] == "fusion"
    assert set(figures["chosen"]) == {"functionals", "C", "msir_weight"}
    assert 0 <= figures["msir_uar"] <= 1 and 0 <= figures["functionals_uar"] <= 1
    assert set(metrics["baselines"]) == {"svm-compare", "svm-egemaps"}
    for baseline in metrics["baselines"].values():
        assert list(baseline["folds"]) == [fold]
    results = (run / "results.md").read_text()
    assert "UAR beside the baselines" in results and "SVM, compare" in results
    folder = run / "classification" / fold
    report = json.loads((folder / "metrics.json").read_text())
    selection = pd.read_csv(folder / "selection.csv", dtype={"speaker": str})
    assert not set(selection["speaker"].astype(str)) & set(report["fold"]["test_speakers"])
    assert len(selection) == report["fold"]["train"] + report["fold"]["validation"]
    assert set(selection["speaker"].astype(str)) == set(report["fold"]["train_speakers"])
    predictions = pd.read_csv(folder / "predictions.csv")
    # The fused probabilities are the weighted parts' (the model's output, recomputed from the columns).
    w = figures["chosen"]["msir_weight"]
    for name in ("angry", "sad"):
        np.testing.assert_allclose(predictions[f"p_{name}"],
                                   w * predictions[f"msir_p_{name}"] + (1 - w) * predictions[f"functionals_p_{name}"],
                                   atol=1e-5)


@pytest.mark.slow
def test_fused_model_loads_with_plain_keras(runs):
    run = runs["fusion"]
    fold = next(p for p in (run / "classification").iterdir() if p.is_dir())
    model = keras.saving.load_model(str(fold / "model.keras"), compile=False)
    assert type(model).__name__ == "LateFusion"
    assert model.feature_inputs == ["lld", "egemaps"]
    assert set(model.feature_config) == {"lld", "egemaps"}


@pytest.mark.slow  # extracts ComParE functionals and builds two fused models: CI runs it
def test_a_run_whose_folds_chose_other_functionals_predicts_with_all(tmp_path, emodb, sample_wav):
    """Fold models of one fused run may take different functional sets: the Detector extracts every input any
    of them takes and gives each model its own, as each would alone."""
    from msir_keras import engine
    from msir_keras.audio import read_audio
    from msir_keras.config import ExperimentConfig
    from msir_keras.detector import Detector
    from msir_keras.model import LateFusion

    config = ExperimentConfig(model="msir", preset="tiny", branches=("lld",), wav2vec2=None)
    rng = np.random.default_rng(0)
    names = ["angry", "happy", "neutral", "sad"]
    y = np.arange(40) % 4
    models = {}
    for fold, chosen in (("f1", "egemaps"), ("f2", "compare")):
        msir = engine.build(config, {"lld": (195,)}, names, feature_config=engine.feature_config(config),
                            name=f"msir_{fold}")
        size = {"egemaps": 88, "compare": 6373}[chosen]
        _, classifier = fit_functionals_classifier({chosen: rng.normal(size=(40, size))}, y, [chosen], 0.1, names)
        models[fold] = LateFusion(msir, classifier, 0.5)
        folder = tmp_path / "run" / "classification" / fold
        folder.mkdir(parents=True)
        models[fold].save(str(folder / "model.keras"))
    detector = Detector(str(tmp_path / "run"))
    assert sorted(detector.extractors) == ["compare", "egemaps", "lld"]
    both = detector.predict([sample_wav])
    inputs = detector.features([read_audio(sample_wav)])
    alone = [np.asarray(m({k: inputs[k] for k in m.feature_inputs})) for m in models.values()]
    np.testing.assert_allclose(both[[f"p_{n}" for n in names]].to_numpy(float)[0], np.mean(alone, axis=0)[0],
                               rtol=1e-4, atol=1e-5)


def test_vector_inputs_are_z_scored_per_utterance():
    from msir_keras.data import FeatureSet

    rng = np.random.default_rng(0)
    vectors = rng.normal(3.0, 2.0, size=(9, 88)).astype(np.float32)
    data = FeatureSet({"lld": [rng.normal(size=(n, 5)) for n in range(3, 12)], "egemaps": list(vectors)})
    mean, std = data.fit_normalization()["egemaps"]
    np.testing.assert_allclose(mean, vectors.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, vectors.std(axis=0), rtol=1e-5)
    assert data.frame_shapes() == {"lld": (5,), "egemaps": ()}


def test_functionals_branch_learns_emotions_from_egemaps(egemaps):
    """Early fusion's fourth branch alone (`branches=("func",)`): trained on eight EmoDB speakers, it
    recognises the four emotions of the other two well above chance (0.25)."""
    from msir_keras.data import FeatureSet
    from msir_keras.engine import compile_model
    from msir_keras.config import ExperimentConfig
    from msir_keras.metrics import uar
    from msir_keras.model import MSIR

    x, y, speakers = egemaps
    test = np.isin(speakers, ["03", "08"])
    train = FeatureSet({"egemaps": list(x[~test])}, y[~test])
    model = MSIR.from_preset("small", branches=("func",), class_names=list("ahns"))
    assert model.feature_inputs == ["egemaps"] and model.feature_shapes() == {"egemaps": ()}
    model.set_normalization(train.fit_normalization())
    keras.utils.set_random_seed(0)
    compile_model(model, ExperimentConfig(corpus="emodb", root="", wav2vec2=None), learning_rate=3e-3)
    model.fit(train.pipeline(32, seed=0), epochs=30, verbose=0)
    predicted = FeatureSet({"egemaps": list(x[test])}).predict(model, 32).argmax(axis=1)
    assert uar(y[test], predicted, 4) > 0.6


def test_late_fusion_shares_the_functionals_msirs_branch_takes(egemaps, tmp_path):
    """MSIR + F late-fused with a classifier on the same eGeMAPS: one `egemaps` input feeds both parts, and
    the output is the weighted mean of each part alone; the whole round-trips through `.keras`."""
    from msir_keras.model import LateFusion, MSIR, MSIREnsemble, load_model

    x, y, _ = egemaps
    rng = np.random.default_rng(1)
    members = [MSIR.from_preset("tiny", branches=("lld", "func"), lld_dim=6, class_names=list("ahns"), name=n)
               for n in ("m1", "m2")]
    msir = MSIREnsemble(members)
    _, classifier = fit_functionals_classifier({"egemaps": x[:200]}, y[:200], ["egemaps"], 0.1, list("ahns"))
    fused = LateFusion(msir, classifier, 0.3)
    assert fused.feature_inputs == ["lld", "egemaps"]
    assert sorted(input.name for input in fused.inputs) == ["egemaps", "lld"]
    batch = {"lld": rng.normal(size=(5, 40, 6)).astype(np.float32), "egemaps": x[200:205].astype(np.float32)}
    expected = 0.3 * np.asarray(msir(batch)) + 0.7 * np.asarray(classifier([batch["egemaps"]]))
    np.testing.assert_allclose(np.asarray(fused(batch)), expected, atol=1e-6)
    fused.save(tmp_path / "fused.keras")
    np.testing.assert_allclose(np.asarray(load_model(str(tmp_path / "fused.keras"))(batch)), expected, atol=1e-6)


def test_too_few_speakers_hold_out_groups_or_train_a_fixed_budget():
    """A fold that trains on fewer speakers than selection needs never chooses on a same-speaker score: it holds
    out the corpus's `group` (or `text`) values, or trains on a fixed budget (no validation part)."""
    from msir_keras.config import ExperimentConfig
    from msir_keras.corpora.splits import Fold
    from msir_keras.selection import _without_same_speaker_selection
    from msir_keras.fusion import selection_groups

    table = pd.DataFrame({"speaker": ["a"] * 6 + ["b"] * 6, "gender": ["F"] * 6 + ["M"] * 6,
                          "text": ["t1", "t2", "t3", "t4", "t5", "t6"] * 2})
    one_speaker = np.arange(6)
    by, keys, groups = selection_groups(table, one_speaker, 2)
    assert by == "text" and groups == [["t1", "t3", "t5"], ["t2", "t4", "t6"]] and keys[7] == "t2"
    assert selection_groups(table, np.arange(12), 2)[0] == "speaker"
    assert selection_groups(table, np.arange(12), 3)[2] == [["a"], ["b"]]  # two speakers: never their texts
    constant = table.assign(group="g")  # one value: no grouping, the next column serves
    assert selection_groups(constant, one_speaker, 2)[0] == "text"
    assert selection_groups(table.drop(columns="text"), one_speaker, 2) == (None, None, None)

    config = ExperimentConfig(corpus="manifest", root="", wav2vec2=None, validation=0.2)
    same_speaker = Fold("test-b", np.arange(5), np.array([5]), np.arange(6, 12))  # validation drawn from "a"
    fold = _without_same_speaker_selection(config, table, same_speaker)
    held = set(table["text"].iloc[fold.validation])  # whole texts, until they hold 20 % of the utterances
    assert len(held) == 2 and not held & set(table["text"].iloc[fold.train])
    assert sorted(np.concatenate([fold.train, fold.validation])) == list(range(6))
    from msir_keras.selection import no_groups

    blank = table.assign(text=table["text"].where(table.index != 2))
    assert len(_without_same_speaker_selection(config, blank, same_speaker).validation) == 0
    assert no_groups(blank, np.arange(6)) == "`text` is empty on 1 of its 6 training utterances (fill them)"
    budget = _without_same_speaker_selection(config, table.drop(columns="text"), same_speaker)
    assert list(budget.train) == list(range(6)) and len(budget.validation) == 0
    svm = _without_same_speaker_selection(dataclasses.replace(config, model="svm-compare"), table, same_speaker)
    assert (svm.train == fold.train).all() and (svm.validation == fold.validation).all()
    two_speakers = Fold("test-c", np.arange(10), np.array([10]), np.array([11]))
    assert _without_same_speaker_selection(config, table, two_speakers) is two_speakers
