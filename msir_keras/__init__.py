"""msir-keras: MSIR speech emotion detection (Wu et al., IEICE 2024) in Keras.

`import msir_keras` is enough for `keras.saving.load_model` to read any model
this package saves: the classes a `.keras` file names (MSIR, its layers, the
focal loss, the UAR metric, ensembles, late fusion) are registered with
Keras as soon as Keras is imported, before or after this package (files
saved before MSIR's backbone split load with `msir_keras.model.load_model`). Importing
the package alone does not import Keras or TensorFlow, so the `msir`
commands that need neither start in a fraction of a second.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

__version__ = "0.1.0"


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Imports `msir_keras.model` (whose import registers every saved class) once Keras is there.

    It watches the import of `keras` and of this package's modules: after
    either has run, with Keras imported, registration is tried. When Keras
    is first imported by one of this package's modules (say `augment`),
    `msir_keras.model` cannot be imported yet (it needs that module, still
    half-run); it is then tried again when that module has finished. It
    never makes an import fail: a registration that fails otherwise is a
    warning, and the hook leaves.
    """

    msir_keras_registration = True  # how another copy (a reloaded package) recognises it

    def find_spec(self, name, path=None, target=None):
        if name != "keras" and not name.startswith("msir_keras."):
            return None
        for finder in sys.meta_path:  # the usual finders find the module itself
            if getattr(finder, "msir_keras_registration", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        # A file loader serves this one module: wrapping its exec_module touches nothing shared.
        if isinstance(spec.loader, (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader,
                                    importlib.machinery.ExtensionFileLoader)):
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                self.register()

            spec.loader.exec_module = exec_module
        return spec

    def register(self):
        model = sys.modules.get("msir_keras.model")
        if model is not None:  # imported, or being imported: its end registers everything
            if not getattr(model.__spec__, "_initializing", False):
                self._leave()
            return
        if "keras" not in sys.modules:
            return
        try:
            importlib.import_module("msir_keras.model")
        except ImportError as error:
            if "partially initialized" in str(error):
                return  # a module it needs is still running its import: tried again when that one ends
            self._leave(error)
        except Exception as error:  # noqa: BLE001  (another package's import must not fail because of ours)
            self._leave(error)
        else:
            self._leave()

    def _leave(self, error=None):
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        if error is not None:
            warnings.warn(f"msir_keras could not register its Keras classes ({type(error).__name__}: {error}); "
                          "import msir_keras.model to see why", stacklevel=2)


if not any(getattr(finder, "msir_keras_registration", False) for finder in sys.meta_path):
    _finder = _RegisterWithKeras()
    sys.meta_path.insert(0, _finder)
    _finder.register()
