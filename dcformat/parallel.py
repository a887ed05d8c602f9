"""How many threads decoding may use, and the pools that run them.

numpy and the compiled kernels release the GIL inside their loops, so threads speed up
decoding on several cores without processes. The thread count is an argument everywhere;
its default comes from the environment variable ``DCFORMAT_THREADS``, else from the CPUs
this process may run on.

Threads are kept between calls: one pool per worker count, made on first use (a pool made
and joined per call cost about as much as decoding a million symbols). Calls nest (a
tensor decoded on a worker splits its own lanes over threads), so a thread waiting for an
item no worker has started runs it itself: a wait is only ever on a call that is running,
and nesting cannot deadlock however busy the workers are.
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
