"""The `msir` command: inspect, extract, run, train, tune, evaluate, compare, reproduce, export, predict, serve.

`main` parses (`parser.build_parser`, its flags in `flags`) and calls one
`commands.cmd_*`; what the commands do is the library's. Importing this
package imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings

from msir_keras.cli.parser import build_parser


def _quiet_tensorflow():
    # The CLI (not the library) silences TensorFlow's start-up notices.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# TensorFlow's C++ start-up lines that TF_CPP_MIN_LOG_LEVEL does not reach: absl's
# pre-initialisation notices and the CUDA probes of a machine without a GPU.
_STARTUP_NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|cuda_(dnn|blas|fft)|Unable to register"
)
TENSORFLOW_COMMANDS = ("run", "train", "tune", "evaluate", "export", "predict", "serve")


def _import_tensorflow_quietly():
    """Imports TensorFlow (and probes its devices) with those lines filtered out of stderr."""
    if "tensorflow" in sys.modules:
        return
    # Under JAX or PyTorch too, where TensorFlow is installed: Keras imports it (to seed it) all the same.
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe prints here, once
        except ImportError:
            pass  # no TensorFlow: Keras says which backend it needs when it is imported
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        for line in capture.read().decode(errors="replace").splitlines():
            if line.strip() and not _STARTUP_NOISE.search(line):
                print(line, file=sys.stderr)


def _backend_problem():
    """Why Keras cannot start here (its backend's package is not installed), or None; imports nothing."""
    import importlib.util
    import json

    backend = os.environ.get("KERAS_BACKEND")
    if backend is None:  # Keras's own setting, else its default
        config = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "keras.json")
        try:
            with open(config) as handle:
                backend = json.load(handle).get("backend")
        except (OSError, ValueError):
            pass
    backend = backend or "tensorflow"
    if importlib.util.find_spec(backend) is None:
        others = [b for b in ("tensorflow", "jax", "torch") if b != backend and importlib.util.find_spec(b)]
        hint = f"set KERAS_BACKEND={others[0]} (installed here)" if others else "pip install tensorflow"
        return f"Keras's backend is {backend}, which is not installed here: {hint}"
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def main(argv=None):
    """Runs `msir` on `argv` (by default the command line's) and returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    loud = args.debug or getattr(args, "verbose", False)
    if not loud:
        _quiet_tensorflow()
    if args.command in TENSORFLOW_COMMANDS:
        problem = _backend_problem()
        if problem:
            print(f"msir {args.command}: error: {problem}", file=sys.stderr)
            return 2
    if args.command in TENSORFLOW_COMMANDS and not loud:
        # TensorFlow's start-up lines and its retracing notices would bury the package's
        # one-line messages; --verbose or --debug shows them.
        _import_tensorflow_quietly()
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.showwarning = _show_warning  # one line each, not Python's file:line form
    if args.debug:
        return args.handler(args)
    from msir_keras.audio import AudioError
    from msir_keras.corpora import CorpusError
    from msir_keras.features import CheckpointError, ConfigError, MissingFeaturesError

    try:
        return args.handler(args)
    except (AudioError, CorpusError, CheckpointError, ConfigError, MissingFeaturesError,
            FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as error:
        print(f"msir {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"msir {args.command}: interrupted; finished work is kept (a run resumes when "
              "started again)", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line here, the traceback with --debug
        print(f"msir {args.command}: internal error: {type(error).__name__}: {error}\n"
              "This is a bug in msir-keras: rerun with --debug for the traceback and report it.",
              file=sys.stderr)
        return 1
