import subprocess
import sys

import keras
import numpy as np
from keras.ops import convert_to_numpy as to_numpy  # any backend's tensors (torch's carry gradients)
import pytest

from msir_keras.export import export_model
from msir_keras.features.base import ConfigError
from msir_keras.model import MSIR
from msir_keras.serving import LoadedModel

RNG = np.random.default_rng(3)


def _inputs(lengths, w2v_dim=16, lld_dim=195):
    """Random features for utterances of `lengths` log-Mel frames, right-padded to the longest."""
    batch = {}
    for name, shape, rate in (("logmel", (40, 2), 1), ("lld", (lld_dim,), 1), ("w2v", (w2v_dim,), 2)):
        frames = [n // rate for n in lengths]
        x = np.zeros((len(lengths), max(frames), *shape), "float32")
        for row, n in enumerate(frames):
            x[row, :n] = RNG.normal(size=(n, *shape))
        batch[name] = x
    return batch


def _small(**options):
    model = MSIR.from_preset("tiny", w2v_dim=16, **options)
    model.set_normalization({
        name: (RNG.normal(size=shape).astype("float32"), RNG.uniform(0.5, 2, size=shape).astype("float32"))
        for name, shape in model.feature_shapes().items()
    })
    return model


def test_padding_never_changes_a_prediction():
    model = _small()
    batch = _inputs([57, 31, 80])
    unpadded = [to_numpy(model({k: v[i : i + 1, : [57, 31, 80][i] // (2 if k == "w2v" else 1)]
                                  for k, v in batch.items()}))[0] for i in range(3)]
    for pad in (0, 13, 40):
        padded = to_numpy(model(_pad(batch, pad)))
        np.testing.assert_allclose(padded, np.stack(unpadded), rtol=2e-5, atol=2e-6)


def _pad(batch, pad):
    return {k: np.concatenate([v, np.zeros((v.shape[0], pad, *v.shape[2:]), "float32")], axis=1)
            for k, v in batch.items()}


@pytest.mark.parametrize("branches", [("cr",), ("lld",), ("w2v",), ("cr", "lld"), ("lld", "w2v")])
def test_any_subset_of_branches_is_a_configuration(branches):
    model = _small(branches=branches, num_classes=2)
    names = {"cr": "logmel", "lld": "lld", "w2v": "w2v"}
    assert sorted(model.feature_inputs) == sorted(names[b] for b in branches)
    batch = {k: v for k, v in _inputs([40, 22]).items() if k in model.feature_inputs}
    out = to_numpy(model(batch))
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_paper_preset_has_the_paper_sizes():
    model = MSIR.from_preset("paper", lld_dim=195)
    cr = model.backbone.get_layer("cr_branch")
    convs = [layer for layer in cr.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [128, 256, 256, 256, 256, 256]
    assert convs[0].kernel_size == (5, 3)
    assert cr.get_layer("bilstm").forward_layer.units == 128
    assert cr.get_layer("frame_dense").units == 768
    assert model.backbone.get_layer("lld_branch").get_layer("bilstm").merge_mode == "sum"
    assert cr.get_layer("bilstm").merge_mode == "concat"
    assert model.get_layer("dense1").units == 64 and model.dropout == 0.3
    with pytest.raises(ConfigError, match="audio"):
        MSIR.from_preset("tiny", branches=("cr", "audio"))
    with pytest.raises(ConfigError, match="lstm_unit"):
        MSIR.from_preset("tiny", lstm_unit=3)


@pytest.mark.slow
def test_keras_file_round_trip_in_a_fresh_process(tmp_path):
    from msir_keras.losses import FocalLoss
    from msir_keras.metrics import UnweightedAverageRecall

    model = _small(class_names=["angry", "happy", "neutral", "sad"], feature_config={"lld": {"x": 1}})
    # Compiled as a run saves it: the file names the FocalLoss and the UAR metric.
    model.compile(optimizer="adam", loss=FocalLoss(zeta=0.25), metrics=[UnweightedAverageRecall(4)])
    batch = _inputs([45, 30])
    expected = to_numpy(model(batch))
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.savez(tmp_path / "batch.npz", **batch)
    code = (
        "import sys, numpy as np, keras;"
        f"m = keras.saving.load_model({path!r});"  # registered classes: no custom_objects
        f"b = dict(np.load({str(tmp_path / 'batch.npz')!r}));"
        f"np.save({str(tmp_path / 'out.npy')!r}, keras.ops.convert_to_numpy(m(b)));"
        "print(type(m).__name__, m.class_names, type(m.loss).__name__, m.loss.zeta)"
    )
    # `import msir_keras` alone registers the classes, whether Keras is imported after it or before.
    for first in ("import msir_keras;", "import keras, msir_keras;"):
        result = subprocess.run([sys.executable, "-c", first + code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "MSIR ['angry', 'happy', 'neutral', 'sad'] FocalLoss 0.25" in result.stdout
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)


def test_importing_the_package_imports_neither_keras_nor_tensorflow():
    code = "import sys, msir_keras, msir_keras.cli; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a SavedModel is TensorFlow's")
def test_saved_model_round_trip_and_feature_check(tmp_path):
    model = _small(class_names=["a", "b", "c", "d"], feature_config={})
    batch = _inputs([45, 30])
    export_model(model, str(tmp_path / "export"))
    loaded = LoadedModel(str(tmp_path / "export"))
    np.testing.assert_allclose(loaded(batch), to_numpy(model(batch)), rtol=1e-5, atol=1e-6)
    wrong = dict(batch, lld=batch["lld"][..., :130])
    with pytest.raises(ConfigError, match="lld"):
        loaded(wrong)


def test_mixed_precision_keeps_raw_features_and_their_z_scores_in_float32():
    """ComParE LLDs reach about 1e6, beyond float16: z-scored in float16 they overflow to NaN."""
    from msir_keras import engine

    with engine.precision("mixed_float16"):
        model = MSIR.from_preset("tiny", branches=("lld",), lld_dim=4)
    scale = np.array([1e6, 3e5, 1.0, 10.0], "float32")
    model.set_normalization({"lld": (scale, scale / 4)})
    x = (RNG.normal(size=(2, 9, 4)).astype("float32") + 1) * scale
    out = to_numpy(model({"lld": x}))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-3)
    assert model.preprocessor.compute_dtype == "float32"
    assert model.backbone.get_layer("lld_branch").get_layer("bilstm").compute_dtype == "float16"


def test_every_hidden_state_with_a_learned_weighted_sum(tmp_path):
    """`w2v_layers`: the w2v input holds every hidden state; the weights get gradients, train, save and load."""
    from msir_keras.model import load_model

    model = MSIR.from_preset("tiny", branches=("lld", "w2v"), lld_dim=4, w2v_dim=6, w2v_layers=3)
    assert model.feature_shapes()["w2v"] == (3, 6) and model.new_inputs()["w2v"].shape == (None, None, 3, 6)
    np.testing.assert_allclose(model.backbone.layer_weights(), np.full(3, 1 / 3))
    x = {"lld": RNG.normal(size=(8, 7, 4)).astype("float32"), "w2v": RNG.normal(size=(8, 7, 3, 6)).astype("float32")}
    x["w2v"][:, :, 2] *= 5.0  # the third hidden state carries the labels
    labels = (x["w2v"][:, :, 2].mean(axis=(1, 2)) > 0).astype("int32")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=5, batch_size=8, verbose=0)
    weights = model.backbone.layer_weights()
    assert abs(weights.sum() - 1) < 1e-6 and np.ptp(weights) > 1e-3  # trained away from equal
    model.save(tmp_path / "model.keras")
    loaded = load_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(loaded.backbone.layer_weights(), weights, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-6)
