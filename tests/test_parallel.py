"""dcformat.parallel: the thread count and the bounded, ordered thread map behind threaded decoding."""

import threading
import time

import pytest

from dcformat.errors import DCFormatError
from dcformat.parallel import imap_bounded, map_threads, resolve_threads


def test_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DCFORMAT_THREADS", "3")
    assert resolve_threads() == 3
    assert resolve_threads(5) == 5
    monkeypatch.setenv("DCFORMAT_THREADS", "many")
    with pytest.raises(DCFormatError, match="DCFORMAT_THREADS"):
        resolve_threads()
    monkeypatch.delenv("DCFORMAT_THREADS")
    assert resolve_threads() >= 1
    with pytest.raises(DCFormatError):
        resolve_threads(0)


def squaring_counter(delay: float):
    """``(work, state)``: ``work(x)`` returns ``x * x`` after ``delay * (x % 3)`` seconds, and
    ``state["most"]`` is the most calls that ever ran at once."""
    lock = threading.Lock()
    state = {"running": 0, "most": 0}

    def work(x):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(delay * (x % 3))
        with lock:
            state["running"] -= 1
        return x * x

    return work, state


def test_imap_bounded_keeps_order_and_bounds_the_work_in_flight():
    work, state = squaring_counter(0.002)
    consumed = []
    for value in imap_bounded(work, range(40), 3):
        consumed.append(value)
        time.sleep(0.001)
    assert consumed == [x * x for x in range(40)]
    assert 1 <= state["most"] <= 3
    assert list(imap_bounded(work, range(5), 1)) == [0, 1, 4, 9, 16]


def test_imap_bounded_raises_the_first_failure_in_order():
    def work(x):
        if x == 4:
            raise ValueError("four")
        return x

    got = []
    with pytest.raises(ValueError, match="four"):
        for value in imap_bounded(work, range(100), 2):
            got.append(value)
    assert got == [0, 1, 2, 3]


def test_map_threads_keeps_order_and_bounds_the_threads():
    work, state = squaring_counter(0.001)
    assert map_threads(work, range(30), 3) == [x * x for x in range(30)]
    assert 1 <= state["most"] <= 3
    assert map_threads(work, [], 4) == [] and map_threads(work, [5], 4) == [25]


def test_map_threads_reuses_its_threads():
    def names(_):
        time.sleep(0.005)
        return threading.current_thread().name

    first = set(map_threads(names, range(8), 2))
    second = set(map_threads(names, range(8), 2))
    workers = {name for name in first | second if name != threading.current_thread().name}
    assert len(workers) == 1  # one worker beside the caller, the same in both calls


def test_nested_map_threads_cannot_deadlock():
    # Every worker busy with an outer item that waits for inner items: the waiters run them.
    def inner(x):
        time.sleep(0.001)
        return x + 1

    def outer(x):
        return sum(map_threads(inner, range(x, x + 6), 2))

    result = []
    thread = threading.Thread(target=lambda: result.append(map_threads(outer, range(8), 2)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert result == [[sum(range(x + 1, x + 7)) for x in range(8)]]


def test_map_threads_raises_the_first_failure_in_order_after_every_call_ended():
    ended = []

    def work(x):
        time.sleep(0.002 * (5 - x % 5))
        ended.append(x)
        if x in (3, 6):
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 3"):
        map_threads(work, range(10), 2)
    count = len(ended)
    time.sleep(0.05)
    assert len(ended) == count  # nothing still running behind the exception


def test_a_backlog_is_worked_from_the_front_while_the_caller_waits_then_from_both_ends():
    from dcformat.parallel import Backlog

    started, release = threading.Event(), threading.Event()
    done: list[tuple[str, int, int]] = []

    def work(k):
        def call(threads):
            if k == 0:
                started.set()
                release.wait(5)  # the worker holds the first call until the caller finishes
            done.append((threading.current_thread().name, k, threads))

        return call

    backlog = Backlog()
    for k in range(5):
        backlog.add(work(k))
    assert started.wait(5)
    threading.Timer(0.05, release.set).start()
    backlog.finish(3)
    assert sorted(k for _, k, _ in done) == [0, 1, 2, 3, 4]
    worker = [(k, threads) for name, k, threads in done if name == "dcformat-backlog"]
    caller = [(k, threads) for name, k, threads in done if name != "dcformat-backlog"]
    assert worker[0] == (0, 1) and all(threads == 1 for _, threads in worker)
    assert all(threads == 3 for _, threads in caller)
    assert [k for k, _ in caller] == sorted((k for k, _ in caller), reverse=True)  # from the back
    assert not any(t.name == "dcformat-backlog" for t in threading.enumerate())


def test_a_backlog_raises_the_first_error_and_starts_nothing_after_it():
    from dcformat.parallel import Backlog

    ran = []

    def fail(threads):
        raise ValueError("bad tensor")

    backlog = Backlog()
    backlog.add(fail)
    for k in range(3):
        backlog.add(lambda threads, k=k: ran.append(k))
    with pytest.raises(ValueError, match="bad tensor"):
        backlog.finish(2)
    assert len(ran) <= 3  # some may have started before the error; none is run twice
    assert len(set(ran)) == len(ran)


def test_a_cancelled_backlog_runs_nothing_more():
    from dcformat.parallel import Backlog

    started = threading.Event()
    release = threading.Event()
    ran = []

    def first(threads):
        started.set()
        release.wait(5)
        ran.append("first")

    backlog = Backlog()
    backlog.add(first)
    for k in range(3):
        backlog.add(lambda threads, k=k: ran.append(k))
    assert started.wait(5)
    threading.Timer(0.05, release.set).start()
    backlog.cancel()  # the running call ends; the queued ones never start
    assert ran == ["first"]


def test_a_backlog_leaves_its_last_call_to_the_caller_with_every_thread():
    from dcformat.parallel import Backlog

    ran = []
    backlog = Backlog(workers=2)
    backlog.add(lambda threads: ran.append((threading.current_thread().name, threads)))
    time.sleep(0.05)  # idle workers, one call queued: they leave it
    assert ran == []
    backlog.finish(4)
    assert ran == [(threading.current_thread().name, 4)]


def test_a_backlogs_workers_share_the_calls():
    from dcformat.parallel import Backlog

    names = []
    barrier = threading.Barrier(2, timeout=5)
    both = threading.Event()

    def call(threads):
        if threading.current_thread().name == "dcformat-backlog" and len(names) < 2:
            names.append(threading.get_ident())
            barrier.wait()  # two workers in calls at once
            both.set()

    backlog = Backlog(workers=2)
    for _ in range(6):
        backlog.add(call)
    assert both.wait(5)
    backlog.finish(1)
    assert len(set(names)) == 2
