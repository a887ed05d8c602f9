"""save_file is atomic: a writer killed at any moment leaves the old or the new file, never a partial one.

A child process saves version after version of a file to one path (tensors of a few MiB,
so each save takes some milliseconds); the test kills it with SIGKILL at random moments
and checks, after each kill, that the file at the path verifies and is a complete
version (the last one the child reported, or the next one if the rename landed just
before the kill). On Linux the temporary file has no name until just before the rename
(O_TMPFILE), so killed writers leave at most one ``.NAME.*.tmp`` behind (a kill in the
microseconds between naming and renaming); elsewhere each kill may leave one.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dcformat
from dcformat.io import atomic as container
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
BUDGET_SECONDS = 12.0
MAX_KILLS = 25
ELEMENTS = 1 << 20  # 4 MiB of float32 per tensor, two tensors per version

CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import dcformat

path, version = sys.argv[2], int(sys.argv[3])
elements = int(sys.argv[4])
rng = np.random.default_rng(version)
noise = rng.standard_normal(elements).astype(np.float32)
print("ready", flush=True)
while True:
    tensors = {"v": np.full(elements, version, dtype=np.float32), "noise": noise}
    dcformat.save_file(tensors, path, metadata={"version": str(version)}, options=dcformat.EncodeOptions(dense="raw"))
    print(version, flush=True)
    version += 1
"""


def stored_version(path: pathlib.Path) -> int:
    """The version of the complete file at ``path``; raises if it is not a complete, valid file."""
    with dcformat.open(path) as f:
        f.verify()
        version = int(f.metadata()["version"])
        v = f.get("v")
        assert v.shape == (ELEMENTS,) and bool((v == version).all()), "tensor and metadata disagree"
        assert f.get("noise").shape == (ELEMENTS,)
    return version


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_killed_writer_leaves_a_complete_file(tmp_path):
    path = tmp_path / "model.dcf"
    dcformat.save_file({"v": np.zeros(ELEMENTS, np.float32), "noise": np.zeros(ELEMENTS, np.float32)}, path, metadata={"version": "0"})
    rng = random.Random(1234)
    version, kills, mid_write, deadline = 0, 0, 0, time.monotonic() + BUDGET_SECONDS
    while kills < MAX_KILLS and time.monotonic() < deadline:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(ROOT), str(path), str(version + 1), str(ELEMENTS)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            reported = [int(line) for line in child.stdout.read().split()]
            child.wait()
        kills += 1
        last = reported[-1] if reported else version
        found = stored_version(path)  # raises if the file at the final name is partial or corrupt
        assert found in (last, last + 1), f"found version {found}, the child last reported {last}"
        mid_write += found == last + 1 or not reported
        version = found
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != path.name)
    assert all(name.startswith(".model.dcf.") and name.endswith(".tmp") for name in leftovers), leftovers
    assert len(leftovers) <= (1 if anonymous_files_work(tmp_path) else kills), leftovers
    assert kills >= 5, f"only {kills} kills in the time budget"
    print(
        f"\n{kills} kills ({mid_write} landed a version the child had not reported yet, or came before its first save), "
        f"final version {version}, {len(leftovers)} temporary files left behind"
    )


def anonymous_files_work(folder) -> bool:
    fd = container._anonymous_file(str(folder))
    if fd is None:
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("anonymous", [True, False])
def test_no_temporary_name_while_writing(tmp_path, monkeypatch, anonymous):
    """Unnamed while written where O_TMPFILE works; the named fallback is cleaned up by abort."""
    if anonymous and not anonymous_files_work(tmp_path):
        pytest.skip("this system or filesystem has no O_TMPFILE; the fallback case covers it")
    if not anonymous:
        monkeypatch.setattr(container, "_anonymous_file", lambda folder: None)
    path = tmp_path / "m.dcf"
    writer = dcformat.writer(path)
    writer.add("a", np.ones(1000, np.float32))
    during = sorted(p.name for p in tmp_path.iterdir())
    if anonymous:
        assert during == []
    else:
        assert len(during) == 1 and during[0].startswith(".m.dcf.") and during[0].endswith(".tmp")
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with dcformat.writer(path) as again:
        again.add("a", np.ones(1000, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dcf"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    assert dcformat.load_file(path)["a"].sum() == 1000


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_save_keeps_the_previous_file_and_no_temporary(tmp_path):
    """An exception inside save_file (a tensor it cannot store) leaves the old file and cleans up."""
    path = tmp_path / "model.dcf"
    dcformat.save_file({"a": np.arange(4, dtype=np.int32)}, path)
    before = path.read_bytes()
    with pytest.raises(dcformat.EncodeError):
        dcformat.save_file({"a": np.arange(4, dtype=np.int32), "b": np.array(["text"])}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.dcf"]


def test_temporary_file_is_beside_the_target(tmp_path, monkeypatch):
    """The temporary file is created in the target's folder (a rename across filesystems is not atomic)."""
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(os.path.abspath(src)), os.path.basename(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "sub" / "m.dcf"
    path.parent.mkdir()
    dcformat.save_file({"a": np.zeros(3, np.float32)}, path)
    assert len(seen) == 1
    folder, name, dst = seen[0]
    assert folder == str(path.parent) and name.startswith(".m.dcf.") and name.endswith(".tmp") and dst == str(path)
