"""Replay the fuzz corpus and every crash reproducer, and run a quick mutation fuzz.

``fuzz/harness.check_input`` may swallow only :class:`dcformat.DCFormatError`: anything
else it lets through (or a failed consistency check) is a decoder bug. Reproducers of
bugs that are reported but not fixed yet are listed in ``harness.KNOWN_OPEN_BUGS`` and
replayed as ``xfail(strict=True)``: fixing the bug turns the test red until its entry is
removed.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import dcfbuild, harness
from tests.support.paths import REPO_ROOT

FUZZ = REPO_ROOT / "fuzz"
CORPUS = sorted((FUZZ / "corpus").iterdir())
CRASHES = sorted((FUZZ / "crashes").glob("*.dcf"))
#: Seeds for the mutation test: small files, so one example takes milliseconds.
SEEDS = [p.read_bytes() for p in CORPUS if p.stat().st_size <= 4096]


def test_corpus_and_crashes_are_there():
    assert len(CORPUS) >= 20
    assert any(p.name.startswith("vector_") for p in CORPUS)
    assert set(harness.KNOWN_OPEN_BUGS) <= {p.name for p in CRASHES}, "a known bug without its reproducer"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_file_replays(path):
    harness.check_input(path.read_bytes())


def _crash_params():
    for path in CRASHES:
        known = harness.KNOWN_OPEN_BUGS.get(path.name)
        marks = [pytest.mark.xfail(strict=True, reason=f"open package bug: {known[0]}")] if known else []
        yield pytest.param(path, id=path.name, marks=marks)


@pytest.mark.parametrize("path", list(_crash_params()))
def test_crash_reproducer_replays(path):
    harness.check_input(path.read_bytes())


_INTERESTING = [0, 1, 2, 7, 8, 16, 20, 21, 63, 64, 65, 255, 256, 1024, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**48, 2**48 + 1, 2**63, 2**64 - 1]


@st.composite
def mutants(draw) -> bytes:
    """A seed with 1-4 byte-level mutations and, usually, its CRCs re-fixed."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "int", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int":
            size = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(_INTERESTING)) % (1 << (8 * size))
            data[at : at + size] = value.to_bytes(size, "little")
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    data = bytes(data)
    return dcfbuild.fix_crcs(data) if draw(st.integers(0, 9)) else data


@settings(max_examples=5 * settings.default.max_examples, suppress_health_check=list(HealthCheck))
@given(mutants())
def test_mutated_inputs_raise_only_format_errors(data):
    try:
        harness.check_input(data)
    except Exception as exc:
        if harness.known_open_bug(data, exc) is None:
            raise


def test_warnings_as_errors_do_not_escape():
    """Found while testing limits (fixed): numpy's cast of the codebook 65520.0 to float16 warned
    'overflow encountered in cast', which escaped get() under -W error."""
    import warnings

    data = (FUZZ / "crashes" / "codebook_float16_overflow_runtimewarning.dcf").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        harness.check_input(data)


def test_corpus_replays_with_warnings_as_errors():
    """Every other corpus file and reproducer raises no warning either."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in CORPUS + CRASHES:
            if path.name in harness.KNOWN_OPEN_BUGS:
                continue
            harness.check_input(path.read_bytes())
