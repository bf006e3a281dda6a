"""Model files saved before MSIR was split into backbone, preprocessor and head still load.

`tests/data/legacy/` holds an MSIR, a seed ensemble and a late-fused
classifier saved by msir-keras 707d669 (tiny preset, weights drawn away from
their initialisation, random z-score statistics), with their inputs and
outputs at the time.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from msir_keras.legacy import is_legacy
from msir_keras.model import MSIR

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy")
SAVED = ("msir", "ensemble", "late_fusion")


@pytest.mark.slow
def test_old_files_load_in_a_fresh_process_and_predict_as_when_saved(tmp_path):
    code = (
        "import sys, numpy as np;"
        "from msir_keras.model import load_model;"
        f"ref = np.load({os.path.join(LEGACY, 'outputs.npz')!r});"
        "x = {k[6:]: ref[k] for k in ref.files if k.startswith('input_')};"
        f"models = {{n: load_model(f'{LEGACY}/{{n}}.keras') for n in {SAVED!r}}};"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **{{n: m.predict(x, verbose=0) for n, m in models.items()}});"
        "m = models['msir']; m.save(sys.argv[1]);"
        "print(type(m.backbone).__name__, type(m.loss).__name__, m.loss.zeta, m.class_names, m.feature_config)"
    )
    resaved = str(tmp_path / "resaved.keras")
    result = subprocess.run([sys.executable, "-c", code, resaved], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MSIRBackbone FocalLoss 0.25 ['a', 'h', 'n', 's'] {'lld': {'extractor': 'lld'" in result.stdout
    reference, outputs = np.load(os.path.join(LEGACY, "outputs.npz")), np.load(tmp_path / "out.npz")
    for name in SAVED:
        np.testing.assert_allclose(outputs[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # Saved again, the file is in today's layout.
    assert is_legacy(os.path.join(LEGACY, "msir.keras")) and not is_legacy(resaved)


def test_the_old_weights_are_what_makes_the_outputs():
    """A model built from the old config alone (fresh weights) predicts otherwise: the check above can fail."""
    import json
    import zipfile

    with zipfile.ZipFile(os.path.join(LEGACY, "msir.keras")) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    fresh = MSIR.from_config(config)
    reference = np.load(os.path.join(LEGACY, "outputs.npz"))
    x = {k[6:]: reference[k] for k in reference.files if k.startswith("input_")}
    assert np.abs(fresh.predict(x, verbose=0) - reference["msir"]).max() > 1e-3
