"""The feature cache: features computed once per (audio file, extractor config).

Layout under the store's root::

    <extractor.key()>/extractor.json        what made these features
    <extractor.key()>/<d[:2]>/<digest>.npy  one array per audio file

The key hashes the extractor's full identity (its config, and for wav2vec 2.0
the checkpoint's weights), and the digest hashes the audio file's bytes, so a
changed setting or an edited file never reads a stale entry. Each array is
written to a temporary file and renamed into place: a run killed halfway
leaves only whole entries, and the next run resumes from them. Arrays are
`.npy` read with `allow_pickle=False`; nothing is pickled.

An entry is checked before it counts as present: its `.npy` header must
parse, hold float32 (float16 where the extractor's `store_dtype` says so:
an upstream's every hidden state), and the file's size must match the
shape it declares.
Every array is checked finite before it is written (a file whose features
hold NaN or infinity, as openSMILE gives for a segment shorter than its
window, is a failed file, named with the reason), and its BLAKE2b checksum
is written beside it (`<digest>.b2`); loading verifies the checksum, so
bytes changed after the write are caught even where the header and the size
are intact. A damaged entry (zero bytes, truncated, overwritten) is moved
aside to `<root>/damaged/` and computed again, and the summary names it.
Files are written with the user's umask, so a store can be shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings

import numpy as np

from msir_keras.audio import file_digest
from msir_keras.features.base import nonfinite_problem


class MissingFeaturesError(LookupError):
    """Features an experiment needs that the store does not hold yet (or holds damaged)."""


class DamagedEntryError(MissingFeaturesError):
    """A stored entry whose bytes are not what was written; it has been moved aside."""


def checksum(array):
    """The BLAKE2b digest of an array's float32 bytes, as written beside its entry."""
    return hashlib.blake2b(np.ascontiguousarray(array, dtype=np.float32).tobytes(), digest_size=16).hexdigest()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def entry_problem(path):
    """Why the `.npy` entry at `path` cannot be used, or None when it is whole.

    Checks the header (magic, version, float32 or float16, a shape) and that the file's
    size is exactly the header plus the data it declares: zero-byte,
    truncated and overwritten entries are caught without reading the data.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            start = handle.tell()
    except (ValueError, EOFError, OSError, SyntaxError) as error:
        return f"unreadable header ({type(error).__name__}: {error})"
    if dtype not in (np.float32, np.float16) or fortran:
        return f"holds {dtype}{' (Fortran order)' if fortran else ''}, not float32 or float16 rows"
    expected = start + int(np.prod(shape)) * dtype.itemsize
    if size != expected:
        return f"{size} bytes where its header {shape} needs {expected}"
    return None


def atomic_write(path, write):
    """Writes a file whole or not at all: `write(stream)` into a temporary file, renamed into place."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        # mkstemp makes the file private (0600); a shared store needs the user's umask.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class FeatureStore:
    """Features on disk, keyed by audio content and extractor identity.

    Args:
        root: str. The store's folder; created when first written.

    Example:
    >>> store = FeatureStore("feature-store")
    >>> summary = store.extract(["a.wav", "b.wav"], [LogMel(), LLD()])  # doctest: +SKIP
    >>> store.load_many(["a.wav"], LogMel())[0].shape  # doctest: +SKIP
    (412, 40, 2)
    """

    def __init__(self, root):
        self.root = str(root)
        self._digests = {}
        self._keys = {}
        self._checked = set()  # entries verified whole by this process

    def _key(self, extractor):
        # Identity can be costly (wav2vec 2.0 hashes its weights): once per extractor.
        if id(extractor) not in self._keys:
            self._keys[id(extractor)] = (extractor, extractor.key())
        return self._keys[id(extractor)][1]

    def digest(self, path):
        """The content digest of an audio file, memoised by (path, size, mtime)."""
        status = os.stat(path)
        memo = (os.path.abspath(path), status.st_size, status.st_mtime_ns)
        if memo not in self._digests:
            self._digests[memo] = file_digest(path)
        return self._digests[memo]

    def path(self, extractor, digest):
        return os.path.join(self.root, self._key(extractor), digest[:2], f"{digest}.npy")

    def has(self, extractor, digest, repaired=None, verify=False):
        """Whether a whole entry is stored; a damaged one is moved aside (see `set_aside`).

        The header and size are always checked; `verify` also reads the data
        and checks its checksum and values (what `load` does).
        """
        path = self.path(extractor, digest)
        if path in self._checked:
            return True
        if not os.path.exists(path):
            return False
        problem = entry_problem(path)
        if problem is None and verify:
            try:
                problem = self._content_problem(path, np.load(path, allow_pickle=False))
            except (ValueError, EOFError, OSError) as error:
                problem = f"{type(error).__name__}: {error}"
        if problem is None:
            self._checked.add(path)
            return True
        moved = self.set_aside(path)
        if repaired is not None:
            repaired.append((path, moved, problem))
        else:
            warnings.warn(f"{path}: damaged feature-store entry ({problem}); moved to {moved}, "
                          "it will be computed again", stacklevel=2)
        return False

    def _audio_warnings_path(self, digest):
        return os.path.join(self.root, "audio-warnings", digest[:2], f"{digest}.json")

    def keep_audio_warnings(self, digest, reasons):
        """Keeps what `read_audio` warned about a file (truncated, silence ...) with the store."""
        path = self._audio_warnings_path(digest)
        if reasons:
            text = json.dumps(reasons).encode()
            atomic_write(path, lambda stream: stream.write(text))
        elif os.path.exists(path):
            os.remove(path)

    def audio_warnings(self, digest):
        """The warnings kept for a file's audio when it was read (a list of reasons; [] for none)."""
        try:
            with open(self._audio_warnings_path(digest)) as handle:
                return list(json.load(handle))
        except (FileNotFoundError, ValueError):
            return []

    def set_aside(self, path):
        """Moves a damaged entry to `<root>/damaged/`, keeping it for inspection."""
        relative = os.path.relpath(path, self.root)
        moved = os.path.join(self.root, "damaged", f"{relative}.{time.strftime('%Y%m%d-%H%M%S')}")
        os.makedirs(os.path.dirname(moved), exist_ok=True)
        os.replace(path, moved)
        if os.path.exists(path[:-4] + ".b2"):
            os.replace(path[:-4] + ".b2", moved + ".b2")
        self._checked.discard(path)
        return moved

    def save(self, extractor, digest, array):
        folder = os.path.join(self.root, self._key(extractor))
        description = os.path.join(folder, "extractor.json")
        if not os.path.exists(description):
            text = json.dumps(extractor.identity(), indent=2, sort_keys=True).encode()
            atomic_write(description, lambda stream: stream.write(text))
        array = np.ascontiguousarray(array, dtype=getattr(extractor, "store_dtype", "float32"))
        problem = nonfinite_problem(array)
        if problem is not None:  # never stored: the caller reports the file as failed
            raise ValueError(problem)
        path = self.path(extractor, digest)
        # The checksum first: an entry is there once its .npy is, and is then always verifiable.
        text = checksum(array).encode()
        atomic_write(path[:-4] + ".b2", lambda stream: stream.write(text))
        atomic_write(path, lambda stream: np.save(stream, array, allow_pickle=False))

    def load(self, extractor, digest):
        """The stored array, verified: header, size, checksum (where written) and finite values.

        Raises:
            DamagedEntryError: the entry is not what was written; it is moved
                aside (`set_aside`) and the message says how to compute it anew.
        """
        path = self.path(extractor, digest)
        problem = entry_problem(path)
        if problem is None:
            try:
                array = np.load(path, allow_pickle=False)
                problem = self._content_problem(path, array)
                if problem is None:
                    return array
            except (ValueError, EOFError, OSError) as error:
                problem = f"{type(error).__name__}: {error}"
        moved = self.set_aside(path)
        raise DamagedEntryError(
            f"{path}: damaged feature-store entry ({problem}); moved to {moved}. Run the same "
            "`msir extract` (or the experiment) again: it computes this entry anew."
        )

    @staticmethod
    def _content_problem(path, array):
        """Why the data of a whole-looking entry is wrong (checksum, non-finite values), or None."""
        try:
            with open(path[:-4] + ".b2") as handle:
                expected = handle.read().strip()
        except FileNotFoundError:  # written before checksums were: the values are still checked
            expected = None
        if expected is not None and checksum(array) != expected:
            return "its data does not match the checksum written with it: the bytes changed after the write"
        return nonfinite_problem(array)

    def load_many(self, paths, extractor):
        """Loads the features of `paths`; raises if any is not in the store yet."""
        missing, arrays, damaged = [], [], []
        for path in paths:
            try:
                digest = self.digest(path)
            except OSError:
                missing.append(path)
                continue
            if os.path.exists(self.path(extractor, digest)):
                try:
                    arrays.append(self.load(extractor, digest))  # verifies the entry
                except DamagedEntryError as error:
                    damaged.append(f"{path}: {error}")
            else:
                missing.append(path)
        if damaged:  # every damaged entry is set aside before this is raised: one rerun repairs them all
            raise DamagedEntryError("\n".join(damaged))
        if missing:
            shown = "\n  ".join(map(str, missing[:5]))
            raise MissingFeaturesError(
                f"{len(missing)} file(s) have no {extractor.name} features in {self.root}, "
                f"e.g.\n  {shown}\nRun `msir extract` on the corpus with the same feature "
                "settings first (files that failed extraction are listed in its summary)."
            )
        return arrays

    def extract(self, paths, extractors, shard=None, progress=False, chunk_size=16, workers=0, verify=False):
        """Computes every missing feature of `paths` for every extractor.

        A file that fails (unreadable audio, an extractor error) is reported in
        the summary with its reason; the others are still extracted, and what
        was computed before the failure stays in the store.

        Args:
            paths: list of str. Audio files.
            extractors: list of Extractor.
            shard: (i, n) or None. Only every n-th file, starting at the i-th
                (1-based) of the sorted paths, so n machines share one corpus.
            progress: bool. Show a tqdm progress bar.
            chunk_size: int. Files read at once, so batching extractors batch.
            workers: int or "auto", defaults to 0. Worker processes for the
                CPU extractors (openSMILE, log-Mels, functionals), which then
                run beside the wav2vec 2.0 encoder in this process instead of
                after it; 0 runs everything here. "auto": one per core left
                over (`msir_keras.features.schedule.default_workers`).
            verify: bool, defaults to False. Read every stored entry and check
                its checksum and values, not only its header and size
                (`msir extract` does; training verifies each entry as it loads it).

        Returns:
            An ExtractionSummary (`msir_keras.features.schedule`).
        """
        # Chunks, worker processes and failures are the scheduler's; this class is the cache.
        from msir_keras.features.schedule import extract

        return extract(self, paths, extractors, shard, progress, chunk_size, workers, verify)
