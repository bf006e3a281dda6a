"""The training engine: build, compile and fit MSIR as separate pieces.

`run_fold`, the keras-tuner `MSIRHyperModel`, the notebooks and the
benchmarks all call these:

    build(config, input_shapes, class_names, normalization)  -> MSIR
    compile_model(model, config, target, learning_rate)      -> the same model, compiled
    fit(model, train, valid, config, seed)                   -> history DataFrame
    train(config, data, fold, labels, class_names, target)   -> (model, history): the three, seeded

`val_uar` comes from a streaming metric (`UnweightedAverageRecall`)
evaluated by `fit(validation_data=...)` on the validation part of the
training speakers; EarlyStopping keeps the weights of its best epoch.
Under a `tf.distribute` strategy or a JAX `keras.distribution` the model is
built in its scope and the batch is per device (global batch = batch_size x devices).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd

from msir_keras.features.base import ConfigError
from msir_keras.presets import INPUT_SIZE, VECTOR_INPUTS

def build(config, input_shapes, class_names, normalization=None, feature_config=None, **overrides):
    """An MSIR model for features of `input_shapes`, with the experiment's preset and options.

    Args:
        config: ExperimentConfig (preset, branches, model_options).
        input_shapes: {input name: frame shape}, e.g. {"logmel": (40, 2), "lld": (195,)}.
        class_names: list of str. One output per class.
        normalization: {input name: (mean, std)} fitted on the training part, or None.
        feature_config: {input name: extractor config} stored in the model, or None.
        **overrides: MSIR arguments over the config's `model_options` (a tuner's draws).
    """
    from msir_keras.model import MSIR

    options = {**config.model_options, **overrides}
    for name, shape in input_shapes.items():
        shape = tuple(shape)
        if name == "w2v" and len(shape) == 2:  # every hidden state of the upstream: (layers, size)
            options["w2v_layers"], options["w2v_dim"] = shape
        elif name not in VECTOR_INPUTS:  # a vector input (functionals) has its set's fixed size
            options[INPUT_SIZE[name]] = shape if name == "logmel" else shape[0]
    if replicas() > 1 and keras_backend() == "tensorflow":
        # Batch statistics over all replicas; under JAX's DataParallel the jitted step sees the global batch.
        options.setdefault("synchronized_batch_norm", True)
    model = MSIR.from_preset(
        config.preset,
        num_classes=len(class_names),
        branches=config.branches,
        class_names=list(class_names),
        feature_config=feature_config,
        **options,
    )
    if normalization is not None:
        model.set_normalization(normalization)
    return model


def loss_for(config, target):
    """The experiment's loss for one target: focal (zeta per emotion) or cross-entropy, label-smoothed on request."""
    import keras

    from msir_keras.losses import FocalLoss

    if config.loss == "focal":
        return FocalLoss(zeta=config.zeta_for(target), theta=config.theta, label_smoothing=config.label_smoothing)
    if config.label_smoothing:  # cross-entropy is the focal loss with theta 0 and weight 1
        return FocalLoss(zeta=1.0, theta=0.0, label_smoothing=config.label_smoothing, name="crossentropy")
    return keras.losses.SparseCategoricalCrossentropy()


def compile_model(model, config, target="classification", learning_rate=None, jit_compile=None):
    """Compiles with Adam, the experiment's loss and the streaming UAR; returns the model."""
    import keras

    from msir_keras.metrics import UnweightedAverageRecall

    rate = config.learning_rate if learning_rate is None else learning_rate
    if not rate > 0:
        raise ConfigError(f"learning rate must be > 0, got {rate}")
    model.compile(
        optimizer=keras.optimizers.Adam(rate, clipnorm=config.clipnorm or None),
        loss=loss_for(config, target),
        metrics=["accuracy", UnweightedAverageRecall(model.num_classes)],
        # JAX: "auto" is jax.jit (eager steps otherwise); PyTorch: eager. TensorFlow keeps the config's.
        jit_compile=(config.jit_compile if jit_compile is None else jit_compile)
        or (keras.backend.backend() != "tensorflow" and "auto"),
    )
    return model


def keras_backend():
    """The name of Keras's backend ("tensorflow", "jax", "torch"), importing Keras."""
    import keras

    return keras.backend.backend()


def replicas():
    """Devices that share each batch: the tf.distribute strategy's replicas under TensorFlow, the
    devices of the active `keras.distribution` under JAX; 1 without either, and under PyTorch."""
    import keras

    if keras.backend.backend() == "jax":
        distribution = keras.distribution.distribution()
        return int(distribution.device_mesh.devices.size) if distribution is not None else 1
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def fit(model, train, valid, config, seed=None, epochs=None, callbacks=(), verbose=0, batch_size=None,
        initial_epoch=0):
    """Trains on `train` (a labelled FeatureSet), selects the epoch on `valid`'s val_uar.

    `epochs` is the last epoch (the config's by default) and `initial_epoch`
    the first (0-based): keras-tuner's Hyperband continues a trial from its
    parent's weights for the epochs in between.

    The config's `lr_schedule` runs as a callback and `class_weights`
    weights the loss by the training part's class counts.

    An empty `valid` is a fixed budget: every epoch runs and the model
    keeps the last one's weights (a fold with nothing to hold out, see
    `selection._without_same_speaker_selection`); a "plateau" schedule,
    which watches val_uar, then keeps its rate.

    Returns:
        The history as a DataFrame (epoch, loss, accuracy, uar, val_loss,
        val_accuracy, val_uar, and learning_rate under a schedule); the
        model holds the best epoch's weights.
    """
    import keras

    count = replicas()
    batch = (batch_size or config.batch_size) * count
    seed = config.seed if seed is None else seed
    epochs = epochs or config.epochs
    selecting = len(valid) > 0
    stopping = [keras.callbacks.EarlyStopping(
        monitor="val_uar", mode="max", patience=config.patience, restore_best_weights=True
    )] if selecting else []
    history = model.fit(
        train.pipeline(batch, shuffle=True, seed=seed, replicas=count),
        validation_data=valid.pipeline(batch, shuffle=False, replicas=count) if selecting else None,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[_stop_on_nonfinite_loss(), *stopping,
                   *(schedule_callbacks(config, epochs) if selecting or config.lr_schedule != "plateau" else []),
                   *callbacks],
        class_weight=class_weights(config, train.labels, model.num_classes),
        shuffle=False,  # the dataset shuffles itself, reproducibly
        verbose=verbose,
    )
    table = pd.DataFrame(history.history)
    table.index += initial_epoch
    return table.rename_axis("epoch").reset_index()


class NonFiniteLossError(ValueError):
    """Training gave a NaN or infinite loss: the fold stops, its model is not kept."""


def _stop_on_nonfinite_loss():
    """A callback that raises NonFiniteLossError, naming the epoch, when an epoch's loss is not finite.

    Keras's TerminateOnNaN stops training quietly and keeps the model; a
    model trained into NaN predicts one class for everything, so a run must
    stop here with the reason instead of writing a table of chance.
    """
    import keras

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for name in ("loss", "val_loss"):
                value = (logs or {}).get(name)
                if value is not None and not math.isfinite(float(value)):
                    policy = keras.mixed_precision.global_policy().name
                    raise NonFiniteLossError(
                        f"the {'validation ' if name == 'val_loss' else ''}loss became {float(value)} "
                        f"at epoch {epoch + 1}; try a lower --learning-rate or --set clipnorm=1.0"
                        + (" or --precision float32" if policy != "float32" else "")
                        + ", and check the features (msir extract names files whose features are not finite)")

    return StopOnNonFiniteLoss()


def schedule_callbacks(config, epochs):
    """The Keras callbacks of the config's `lr_schedule` (none for "constant").

    "cosine" is Keras's `CosineDecay` stepped once per epoch: the
    configured rate at epoch 0, falling towards 0 at `epochs`.
    """
    import keras

    if config.lr_schedule == "cosine":
        cosine = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=epochs)
        return [keras.callbacks.LearningRateScheduler(lambda epoch, rate: float(cosine(epoch)))]
    if config.lr_schedule == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_uar", mode="max", factor=0.5,
                                                  patience=max(1, config.patience // 2),
                                                  min_lr=config.learning_rate / 32)]
    return []


def class_weights(config, labels, num_classes):
    """{class id: weight} for Keras's `class_weight`: scikit-learn's "balanced" (N / (C x count)), or None."""
    if config.class_weights == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes)
    missing = [c for c in range(num_classes) if counts[c] == 0]
    if missing:
        raise ConfigError(f"class_weights=balanced: the training part has no example of class(es) {missing}")
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=np.asarray(labels, dtype=int))
    return {c: float(weight) for c, weight in enumerate(weights)}


def check_backend(config):
    """Refuses, before any work, what this Keras backend and these packages cannot run: ConfigError.

    `--strategy mirrored` needs TensorFlow or JAX as the backend (`make_strategy`);
    `--tensorboard` writes through tf.summary, so it needs the tensorflow package
    installed, whatever the backend.
    """
    import importlib.util

    import keras

    backend = keras.backend.backend()
    if config.model_options.get("synchronized_batch_norm") and backend != "tensorflow":
        raise ConfigError(f"synchronized_batch_norm is TensorFlow's; Keras runs on {backend} here (KERAS_BACKEND): "
                          "leave it out (under JAX's --strategy mirrored each step sees the whole batch)")
    if config.strategy == "mirrored" and backend == "jax" and config.tune:
        raise ConfigError("--tune (and msir tune) with --strategy mirrored needs TensorFlow: keras-tuner "
                          "distributes trials with tf.distribute only; under JAX search on one device "
                          "(--strategy default)")
    if config.strategy == "mirrored" and backend not in ("tensorflow", "jax"):
        raise ConfigError(f"--strategy mirrored runs under TensorFlow or JAX; Keras runs on {backend} here "
                          "(KERAS_BACKEND): set KERAS_BACKEND=jax or use --strategy default")
    if config.tensorboard and importlib.util.find_spec("tensorflow") is None:
        raise ConfigError("--tensorboard writes its logs with TensorFlow (tf.summary), which is not installed "
                          "here: pip install tensorflow, or leave --tensorboard out")


def make_strategy(name):
    """Data parallelism over the local devices by name: None for "default"; for "mirrored",
    `tf.distribute.MirroredStrategy` under TensorFlow, `keras.distribution.DataParallel` under JAX.

    Either has a `scope()`; inside it the engine builds and fits, with a global batch of
    batch_size x devices. PyTorch has neither here: ConfigError.
    """
    if name == "default":
        return None
    if name != "mirrored":
        raise ConfigError(f"strategy must be 'default' or 'mirrored', got {name!r}")
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    if backend != "tensorflow":
        raise ConfigError(f"strategy {name!r} runs under TensorFlow (tf.distribute) or JAX "
                          f"(keras.distribution); Keras runs on {backend} here (KERAS_BACKEND): "
                          "use --strategy default")
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


@contextlib.contextmanager
def precision(policy):
    """Keras's global dtype policy for the block (mixed_float16 on GPUs), restored after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train(config, data, fold, labels, class_names, target, seed=None, strategy=None, callbacks=(),
          verbose=0, copies=None, **overrides):
    """Seeds, builds (normalised on the training part), compiles and fits one fold.

    Args:
        config: ExperimentConfig.
        data: FeatureSet of the whole corpus; `fold` picks its parts.
        labels: (N,) class ids. class_names: list of str. target: str.
        seed: int or None (the config's). Weights and batch order follow it.
        strategy: a tf.distribute.Strategy, or None for the config's (`strategy`).
        callbacks: more Keras callbacks (TensorBoard...).
        verbose: 0 silent, 1 Keras's progress bar, 2 a line per epoch.
        copies: a labelled FeatureSet or None. Augmented copies of training
            utterances (speed perturbation), added to the training part;
            the normalisation is fitted on the whole of it.
        **overrides: MSIR options over the config's.

    Returns:
        (model, history DataFrame).
    """
    import keras

    seed = config.seed if seed is None else seed
    keras.utils.set_random_seed(seed)
    labelled = data.with_labels(labels)
    train_part, valid_part = labelled.subset(fold.train), labelled.subset(fold.validation)
    if copies is not None:
        train_part = train_part.concatenate(copies)
    strategy = strategy if strategy is not None else make_strategy(config.strategy)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with precision(config.precision), scope:
        model = build(config, train_part.frame_shapes(), class_names, train_part.fit_normalization(),
                      feature_config(config), **overrides)
        compile_model(model, config, target)
        history = fit(model, train_part, valid_part, config, seed, callbacks=callbacks, verbose=verbose)
    return model, history


def feature_config(config):
    """{input name: extractor, config, identity} of an experiment: stored in its models."""
    return {
        name: {"extractor": e.name, "config": e.get_config(), "identity": e.identity()}
        for name, e in config.extractors().items()
    }
