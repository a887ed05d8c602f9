"""dcformat.parallel: the thread count and the bounded, ordered thread map behind threaded decoding."""

import threading
import time

import pytest

from dcformat.errors import DCFormatError
from dcformat.parallel import imap_bounded, resolve_threads


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


def test_imap_bounded_keeps_order_and_bounds_the_work_in_flight():
    lock = threading.Lock()
    state = {"running": 0, "most": 0}

    def work(x):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(0.002 * (x % 3))
        with lock:
            state["running"] -= 1
        return x * x

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
