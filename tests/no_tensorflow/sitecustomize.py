"""Hides TensorFlow, as on a machine without it (tests of the JAX and PyTorch backends).

The path finder skips `tensorflow`, so `import tensorflow` raises
ModuleNotFoundError and `importlib.util.find_spec("tensorflow")` is None,
exactly as where it was never installed.
"""
import importlib.machinery
import sys


class _PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_PathFinderWithoutTensorFlow if finder is importlib.machinery.PathFinder else finder
                    for finder in sys.meta_path]
