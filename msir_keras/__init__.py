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
import sys

__version__ = "0.1.0"


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Imports `msir_keras.model` (whose import registers every saved class) once Keras is there.

    It watches the import of `keras` and of this package's modules: after
    either has run, with Keras imported, registration is tried. When Keras
    is first imported by one of this package's modules (say `augment`),
    `msir_keras.model` cannot be imported yet (it needs that module, still
    half-run); it is then tried again when that module has finished.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "keras" and not name.startswith("msir_keras."):
            return None
        for finder in sys.meta_path:  # the usual finders find the module itself
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        execute = getattr(spec.loader, "exec_module", None)
        if execute is not None:
            def exec_module(module):
                execute(module)
                self.register()

            spec.loader.exec_module = exec_module
        return spec

    def register(self):
        if "keras" not in sys.modules or "msir_keras.model" in sys.modules:
            return
        try:
            importlib.import_module("msir_keras.model")
        except ImportError:
            return  # a module it needs is still running its import: tried again when that one ends
        if self in sys.meta_path:
            sys.meta_path.remove(self)


if not any(isinstance(finder, _RegisterWithKeras) for finder in sys.meta_path):
    _finder = _RegisterWithKeras()
    sys.meta_path.insert(0, _finder)
    _finder.register()
