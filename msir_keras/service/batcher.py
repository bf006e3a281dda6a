"""The model side of `msir serve`: concurrent requests' features scored together, on one model thread.

Requests arrive one file at a time; a forward pass costs about the same for
one input as for a dozen of similar length. `Batcher` collects what arrives
within a few milliseconds (up to `max_batch` inputs), sorts it by length and
runs `Detector.score` once per bucket of `batch_size` neighbours, as
`Detector.predict` does with a folder. Every model call, the timelines'
included, runs on one dedicated thread: Keras models and TensorFlow graph
functions are not guaranteed re-entrant, and one thread keeps the event loop
free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from msir_keras.detector import PREDICT_BATCH

MAX_WAIT = 0.005  # seconds a first request waits for others to share its forward pass
MAX_BATCH = 64  # inputs collected at most before scoring (in buckets of `batch_size`)


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
        max_wait: float, defaults to `MAX_WAIT` (0.005). Seconds a batch stays
            open for more inputs after its first one arrived.
        max_batch: int, defaults to `MAX_BATCH` (64). Inputs collected at most
            before they are sorted, bucketed and scored.

    Use `start()` inside the event loop, `await score(features)` per request,
    and `stop()` at shutdown. `forward(inputs)` runs `Detector.probabilities`
    on the model thread from any other thread (the timelines' workers).
    Counters: `batches` (forward passes), `scored` (inputs).
    """

    def __init__(self, detector, batch_size=PREDICT_BATCH, max_wait=MAX_WAIT, max_batch=MAX_BATCH):
        self.detector = detector
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.max_batch = max(max_batch, batch_size)
        self.model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="msir-model")
        self.batches = 0
        self.scored = 0
        self._queue = None
        self._task = None

    def start(self):
        """Starts collecting; call from the running event loop."""
        self._queue = asyncio.Queue()
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
        await self._queue.put((features, future))
        return await future

    def forward(self, inputs, cancelled=None):
        """`Detector.probabilities(inputs)` on the model thread; call from a worker thread, not the loop.

        Args:
            inputs: {input name: padded batch}.
            cancelled: threading.Event or None. When set, raises `Cancelled`
                instead of running (a timeline whose client left stops here).
        """
        if cancelled is not None and cancelled.is_set():
            raise Cancelled()
        return self.model_thread.submit(self.detector.probabilities, inputs).result()

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(pending) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            pending = [(features, future) for features, future in pending if not future.done()]  # left: dropped
            pending.sort(key=lambda item: _length(item[0]))
            for start in range(0, len(pending), self.batch_size):
                bucket = [item for item in pending[start:start + self.batch_size] if not item[1].done()]
                if not bucket:
                    continue
                try:
                    results = await loop.run_in_executor(self.model_thread, self.detector.score,
                                                         [features for features, _ in bucket])
                except Exception as error:  # a model failure fails its bucket's requests, not the server
                    for _, future in bucket:
                        if not future.done():
                            future.set_exception(error)
                    continue
                self.batches += 1
                self.scored += len(bucket)
                for (_, future), result in zip(bucket, results):
                    if not future.done():
                        future.set_result(result)
