"""The package's layout: no import circle between its modules, counted as `benchmarks/layout.py` counts them."""

import importlib.util
import os

import msir_keras

HERE = os.path.dirname(os.path.abspath(__file__))


def _layout():
    spec = importlib.util.spec_from_file_location("layout", os.path.join(HERE, "..", "benchmarks", "layout.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_another_that_imports_it_back():
    """Not at module level, and not through imports inside functions either (a lazy import hides a circle)."""
    layout = _layout()
    files = layout.module_files(os.path.dirname(msir_keras.__file__))
    top, every = layout.imports(files)
    # Both kinds are read: data.py imports batches.py inside its methods only.
    assert "msir_keras.batches" in every["msir_keras.data"] and "msir_keras.batches" not in top["msir_keras.data"]
    assert layout.cycles(top) == []
    assert layout.cycles(every) == []
    # The finder itself: a circle made up here is found.
    assert layout.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
