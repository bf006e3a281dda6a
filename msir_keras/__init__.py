"""msir-keras: MSIR speech emotion detection (Wu et al., IEICE 2024) in Keras.

`import msir_keras` is enough for `keras.saving.load_model` to read any model
this package saves: the classes a `.keras` file names (MSIR, its layers, the
focal loss, the UAR metric, ensembles, late fusion) are registered with
Keras as soon as Keras is imported, before or after this package. Importing
the package alone does not import Keras or TensorFlow, so the `msir`
commands that need neither start in a fraction of a second.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def _register():
    importlib.import_module("msir_keras.model")  # its import registers every saved class


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Finds `keras` as usual, then registers this package's classes once it has been executed."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # once; the usual finders find keras itself
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _register()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register()
elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
