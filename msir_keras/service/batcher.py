"""The model side of `msir serve`: concurrent requests' features scored together, on one model thread.

Requests arrive one file at a time; a forward pass costs far less per input
for a batch than for one (the test run's small MSIR on two cores: 40 ms for
one file, 190 ms for 16). `Batcher` takes everything that has arrived,
sorts it by length (as `Detector.predict` sorts a folder) and cuts it into
forward passes of at most `batch_size` inputs, a new pass also where an
input is over `SPREAD` (4) times longer than the pass's shortest: a pass is
padded to its longest input, so a 60 s request does not make 1 s ones pay
for 60 s each. A pass that raises is run again one input at a time, so
that only the input at fault fails. A batch waits for
more only while other requests are on their way (`expect()` counts them,
from the moment their upload is read until their features are ready), and
at most `max_wait`: a lone request is scored at once, and under load the
batches fill up. Every model call, the timelines'
included, runs on one dedicated thread: Keras models and TensorFlow graph
functions are not guaranteed re-entrant, and one thread keeps the event loop
free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time

from msir_keras.detector import PREDICT_BATCH

MAX_WAIT = 1.0  # seconds a batch stays open at most for requests still being decoded and extracted
SPREAD = 4.0  # a forward pass holds inputs up to this many times longer than its shortest


class Cancelled(Exception):
    """A timeline whose client left: raised on the model thread to stop it between batches."""


def _length(features):
    """Frames of an input's longest feature sequence (0 for utterance-level vectors only)."""
    return max((len(value) if getattr(value, "ndim", 1) > 1 else 0) for value in features.values())


class Batcher:
    """Micro-batches `Detector.score` calls from concurrent requests.

    Args:
        detector: `msir_keras.detector.Detector`.
        batch_size: int, defaults to `PREDICT_BATCH` (16). Inputs per forward pass.
        max_wait: float, defaults to `MAX_WAIT` (1.0). Seconds a batch stays
            open at most, while other requests are still being extracted.

    Use `start()` inside the event loop; per request `with batcher.expect():`
    around its extraction and its `await score(features)`; `stop()` at shutdown. `forward(inputs)` runs `Detector.probabilities`
    on the model thread from any other thread (the timelines' workers).
    Counters: `batches` (forward passes), `scored` (inputs), `window_batches` (timelines' passes).
    """

    def __init__(self, detector, batch_size=PREDICT_BATCH, max_wait=MAX_WAIT):
        self.detector = detector
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="msir-model")
        self.batches = 0
        self.scored = 0
        self.window_batches = 0  # timelines' forward passes
        self.timelines = 0  # timelines started (one queued whose client left never starts)
        self.coming = 0  # requests between their upload and their features: a batch may wait for them
        self._queue = None
        self._task = None

    @contextlib.contextmanager
    def expect(self):
        """Counts a request as on its way to `score` while the block runs (decoding, extracting)."""
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1

    def start(self):
        """Starts collecting; call from the running event loop."""
        self._queue = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        """Stops collecting; queued requests are cancelled, the model thread finishes its pass."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()
        self.model_thread.shutdown(wait=True, cancel_futures=True)

    async def score(self, features):
        """The `Detector.score` entry of one input, scored with whatever arrives with it.

        Args:
            features: {input name: (T, ...) array} from `Detector.extract`.

        Returns:
            A row dict (probabilities and decisions) or a one-line reason string.

        Raises:
            asyncio.CancelledError: the request was cancelled (its client
                left); its input is dropped from the queue unscored.
        """
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((features, future))
        self._arrived.set()
        self.coming -= 1  # arrived (`expect` adds it back when the request's block ends)
        try:
            return await future
        finally:
            self.coming += 1

    def forward(self, inputs, cancelled=None):
        """`Detector.probabilities(inputs)` on the model thread; call from a worker thread, not the loop.

        Args:
            inputs: {input name: padded batch}.
            cancelled: threading.Event or None. When set, raises `Cancelled`
                instead of running (a timeline whose client left stops here).
        """
        if cancelled is not None and cancelled.is_set():
            raise Cancelled()
        self.window_batches += 1
        return self.model_thread.submit(self.detector.probabilities, inputs).result()

    async def _run(self):
        while True:
            pending = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while True:
                while not self._queue.empty():  # everything that has arrived
                    pending.append(self._queue.get_nowait())
                timeout = deadline - time.monotonic()
                if len(pending) >= self.batch_size or self.coming <= 0 or timeout <= 0:
                    break
                self._arrived.clear()  # waits on an event, not on queue.get: a timed-out get could lose an item
                try:
                    await asyncio.wait_for(self._arrived.wait(), min(timeout, 0.01))
                except asyncio.TimeoutError:
                    pass  # a request on its way may have failed: `coming` is read again
            live = sorted([item for item in pending if not item[1].done()],  # a client that left: dropped
                          key=lambda item: _length(item[0]))
            for batch in buckets(live, self.batch_size, key=lambda item: _length(item[0])):
                await self._pass(batch)

    async def _pass(self, batch):
        """One forward pass over `batch`; if it raises, each input alone, so that only a bad one fails."""
        batch = [item for item in batch if not item[1].done()]
        if not batch:
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.model_thread, self.detector.score,
                                                 [features for features, _ in batch])
        except Exception as error:  # a model failure fails its own request, not its batch or the server
            if len(batch) > 1:
                for item in batch:
                    await self._pass([item])
            elif not batch[0][1].done():
                batch[0][1].set_exception(error)
            return
        self.batches += 1
        self.scored += len(batch)
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)


def buckets(items, size, key, spread=SPREAD):
    """Consecutive batches of length-sorted `items`: at most `size` each, and a new one where an input is
    more than `spread` times longer than its batch's shortest (so short requests do not pay for a long one)."""
    batches = []
    for item in items:
        if batches and len(batches[-1]) < size and key(item) <= spread * max(key(batches[-1][0]), 1):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches
