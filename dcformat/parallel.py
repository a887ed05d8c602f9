"""How many threads decoding may use, and the pools that run them.

numpy and the compiled kernels release the GIL inside their loops, so threads speed up
decoding on several cores without processes. The thread count is an argument everywhere;
its default comes from the environment variable ``DCFORMAT_THREADS``, else from the CPUs
this process may run on.

Threads are kept between calls: one pool per worker count, made on first use (a pool made
and joined per call cost about as much as decoding a million symbols). Calls nest (a
tensor decoded on a worker splits its own lanes over threads), so a thread waiting for an
item no worker has started runs it itself: a wait is only ever on a call that is running,
and nesting cannot deadlock however busy the workers are. A :class:`Backlog` is the other
shape of work: worker threads of its own, working through a queue while the caller does
something else, then all of them finishing it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TypeVar

from .errors import DCFormatError

ENV_THREADS = "DCFORMAT_THREADS"

T = TypeVar("T")
R = TypeVar("R")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | None = None) -> int:
    """``threads`` if given, else ``$DCFORMAT_THREADS``, else the usable CPU count."""
    if threads is None:
        text = os.environ.get(ENV_THREADS, "").strip()
        if not text:
            return available_cpus()
        try:
            threads = int(text)
        except ValueError:
            raise DCFormatError(f"{ENV_THREADS} must be a positive integer, got {text!r}") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise DCFormatError(f"threads must be a positive integer, got {threads!r}")
    return threads


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` threads (they start as work arrives)."""
    pool = _pools.get(workers)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(workers)
            if pool is None:
                pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix=f"dcformat-{workers}")
    return pool


def _forget_pools() -> None:
    """A forked child has the parent's pools but none of their threads."""
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def _outcome(fn: Callable[[T], R], item: T) -> tuple[bool, object]:
    try:
        return True, fn(item)
    except Exception as error:  # kept to be raised in the order of the items, as a future's would be
        return False, error


def _future_outcome(future: Future) -> tuple[bool, object]:
    error = future.exception()
    return (True, future.result()) if error is None else (False, error)


def _result(future: Future, fn: Callable[[T], R], item: T) -> R:
    """``future``'s result, computed here if no worker has started it (see the module doc)."""
    return fn(item) if future.cancel() else future.result()


def map_threads(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads, the caller's among them,
    results in order.

    Every call has finished when this returns or raises; the first exception in the order
    of ``items`` is re-raised.
    """
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    futures = [_pool(threads - 1).submit(fn, item) for item in items[1:]]
    try:
        done = {0: _outcome(fn, items[0])}
        for k in range(len(futures), 0, -1):  # items no worker has started, from the end (workers take from the front)
            if futures[k - 1].cancel():
                done[k] = _outcome(fn, items[k])
    finally:  # a cancelled future is done only once a worker dequeues it: wait for the started ones alone
        wait_futures([future for future in futures if not future.cancel()])
    results = []
    for k in range(len(items)):
        ok, value = done[k] if k in done else _future_outcome(futures[k - 1])
        if not ok:
            raise value
        results.append(value)
    return results


def imap_bounded(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """``fn(x) for x in items`` on up to ``threads`` threads, yielded in order, at most
    ``threads`` calls started ahead of the consumer.

    For work whose results are large (a model's tensors): at most ``threads`` results
    (and their inputs) exist at once, however many items there are. An exception raised
    by a call is re-raised when its result is reached; later calls are then cancelled,
    and those already running are waited for.
    """
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    pool = _pool(threads)
    pending: deque = deque()
    try:
        for item in items:
            if len(pending) >= threads:
                yield _result(*pending.popleft())
            pending.append((pool.submit(fn, item), fn, item))
        while pending:
            yield _result(*pending.popleft())
    finally:
        wait_futures([future for future, _, _ in pending if not future.cancel()])


class Backlog:
    """Work queued for worker threads of its own while the caller's thread does something
    else (``io.loading.decoding``: planning the next tensors, or transformers building a
    model): calls ``work(threads)``, added with :meth:`add`, which the workers take from the
    front (``threads=1`` each) until the caller, in :meth:`finish`, joins in from the back
    with ``threads`` and waits for the rest. A worker leaves the last queued call to the
    caller, who may still add more or will run it with all its threads (so one large call
    alone is never left to a single worker). An error stops the calls not yet started and is
    raised by :meth:`finish`."""

    def __init__(self, workers: int = 1) -> None:
        self._queue: deque[Callable[[int], None]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._running = 0
        self._errors: list[BaseException] = []
        self._workers = [threading.Thread(target=self._work, name="dcformat-backlog", daemon=True) for _ in range(max(int(workers), 1))]
        for worker in self._workers:
            worker.start()

    def add(self, work: Callable[[int], None]) -> None:
        with self._changed:
            self._queue.append(work)
            self._changed.notify()

    def _take(self, *, last: bool) -> Callable[[int], None] | None:
        """The next call, or None once there is none to come for this thread (the lock held):
        the caller (``last``) takes from the back, a worker from the front but never the last."""
        keep = 0 if last else 1
        while len(self._queue) <= keep and not self._closed:
            self._changed.wait()
        if len(self._queue) <= keep:
            return None
        self._running += 1
        return self._queue.pop() if last else self._queue.popleft()

    def _run(self, *, last: bool, threads: int) -> None:
        while True:
            with self._changed:
                work = self._take(last=last)
            if work is None:
                return
            try:
                work(threads)
            except BaseException as error:  # kept for finish(); the rest is not worth doing
                with self._changed:
                    self._errors.append(error)
                    self._queue.clear()
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def _work(self) -> None:
        self._run(last=False, threads=1)

    def cancel(self) -> None:
        """No more calls started; waits for the running ones."""
        with self._changed:
            self._queue.clear()
        self._close()

    def finish(self, threads: int) -> None:
        """Every call done, the caller's thread helping; raises the first error."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._run(last=True, threads=threads)
        self._close()
        if self._errors:
            raise self._errors[0]

    def _close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            while self._running:
                self._changed.wait()
        for worker in self._workers:
            worker.join()
