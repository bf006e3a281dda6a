"""The allowed range of every numeric setting, checked where settings enter (CLI and configs)."""

from __future__ import annotations

import math

from msir_keras.features.base import ConfigError

# The allowed range of every numeric setting: (type, lowest, highest, lowest allowed?, highest allowed?).
# The CLI checks its flags against the same table, before any work starts.
LIMITS = {
    "n_folds": (int, 2, None, True, True),
    "batch_size": (int, 1, None, True, True),
    "epochs": (int, 1, None, True, True),
    "patience": (int, 0, None, True, True),
    "validation": (float, 0.0, 1.0, False, False),
    "learning_rate": (float, 0.0, None, False, True),
    "theta": (float, 0.0, None, True, True),
    "zeta": (float, 0.0, 1.0, True, True),
    "dropout": (float, 0.0, 1.0, True, False),
    "time_masks": (int, 0, None, True, True),
    "feature_masks": (int, 0, None, True, True),
    "time_mask_width": (float, 0.0, 1.0, True, False),
    "feature_mask_width": (float, 0.0, 1.0, True, False),
    "seed": (int, 0, None, True, True),
    "label_smoothing": (float, 0.0, 1.0, True, False),
    "clipnorm": (float, 0.0, None, True, True),
    "ensemble": (int, 1, None, True, True),
    "inner_folds": (int, 2, None, True, True),
    "fusion_weight": (float, 0.0, 1.0, True, True),
    "threshold": (float, 0.0, 1.0, True, True),
    "max_folds": (int, 1, None, True, True),
    "max_trials": (int, 1, None, True, True),
    "window": (float, 0.0, None, False, True),
    "hop": (float, 0.0, None, False, True),
    # msir serve
    "port": (int, 0, 65535, True, True),
    "max_mb": (float, 0.0, None, False, True),
    "max_seconds": (float, 0.0, None, False, True),
    "max_timeline_minutes": (float, 0.0, None, False, True),
    "threads": (int, 1, None, True, True),
}


def check_limit(name, value, flag=None):
    """Returns `value` converted to its type, or raises ConfigError naming the allowed range."""
    kind, low, high, low_ok, high_ok = LIMITS[name]
    label = flag or name
    try:
        converted = kind(value)
        if kind is int and converted != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ConfigError(f"{label} must be a finite number, got {value!r}")
    below = low is not None and (converted < low or (converted == low and not low_ok))
    above = high is not None and (converted > high or (converted == high and not high_ok))
    if below or above:
        raise ConfigError(f"{label} must be {describe_limit(name)}, got {value}")
    return converted


def describe_limit(name):
    """'an integer >= 2', 'a number in (0, 1)'..."""
    kind, low, high, low_ok, high_ok = LIMITS[name]
    noun = "an integer" if kind is int else "a number"
    if high is None:
        return f"{noun} {'>=' if low_ok else '>'} {low:g}"
    return f"{noun} in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
