"""How many threads decoding may use, and the pool that runs them.

numpy releases the GIL inside its kernels, so threads speed up decoding on several
cores without processes. The thread count is an argument everywhere; its default comes
from the environment variable ``DCFORMAT_THREADS``, else from the CPUs this process may
run on.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import DCFormatError

ENV_THREADS = "DCFORMAT_THREADS"

T = TypeVar("T")
R = TypeVar("R")


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


def map_threads(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads, results in order.

    The first exception raised by any call is re-raised here.
    """
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def imap_bounded(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """``fn(x) for x in items`` on up to ``threads`` threads, yielded in order, at most
    ``threads`` calls started ahead of the consumer.

    For work whose results are large (a model's tensors): at most ``threads`` results
    (and their inputs) exist at once, however many items there are. An exception raised
    by a call is re-raised when its result is reached; later calls are then cancelled.
    """
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    pending: deque = deque()
    with ThreadPoolExecutor(threads) as pool:
        try:
            for item in items:
                if len(pending) >= threads:
                    yield pending.popleft().result()
                pending.append(pool.submit(fn, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
