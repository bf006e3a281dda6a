"""Makes `import tensorflow` fail, as on a machine without it (tests of the JAX and PyTorch backends)."""
import importlib.abc
import importlib.machinery
import sys


class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ImportError(f"No module named {spec.name!r} (hidden)")

    def exec_module(self, module):
        raise ImportError("hidden")


sys.meta_path.insert(0, _NoTensorFlow())
