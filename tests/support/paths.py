"""Where the tests find the checkout and the shared data folders.

The library never guesses a data folder (it takes ``data_dir`` or ``$DCFORMAT_MNIST``);
the tests look in one place, here, and pass the folder they found explicitly:

* ``$DCFORMAT_MNIST`` for MNIST, when it is set;
* otherwise ``<repo root>/../shared/data/<name>``, the repo root being the folder that
  holds ``pyproject.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml above {here}: cannot locate the repository root")


#: The checkout: the folder holding ``pyproject.toml`` (and ``dcformat/``, ``spec/``, ``fuzz/``, ``tools/``).
REPO_ROOT = _repo_root()

#: The shared data folders, beside the checkout.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: The environment variable that names the MNIST folder (the library's ``dcformat.paper.mnist.ENV_VAR``;
#: restated so that finding data needs no import of the package).
MNIST_ENV_VAR = "DCFORMAT_MNIST"


def shared_data_path(name: str) -> Path:
    """Where the shared data folder ``name`` is expected, whether or not it exists."""
    if name == "mnist" and os.environ.get(MNIST_ENV_VAR):
        return Path(os.environ[MNIST_ENV_VAR])
    return SHARED_DATA / name


def shared_data(name: str) -> Path | None:
    """The shared data folder ``name`` (``"mnist"``, ``"squeezenet-deep-compression"``), or None if absent."""
    path = shared_data_path(name)
    return path if path.is_dir() else None


def missing_reason(name: str, what: str | None = None) -> str:
    """A skip reason naming the folder that was looked for."""
    where = f"{shared_data_path(name)}"
    hint = f" (or set ${MNIST_ENV_VAR})" if name == "mnist" else ""
    return f"{what or name} not found: shared data folder {where} is missing or incomplete{hint}"


def require_shared_data(name: str, *files: str, what: str | None = None) -> Path:
    """The shared data folder ``name``, holding ``files``; skips the calling test, naming the folder, when it does not."""
    import pytest

    path = shared_data(name)
    if path is None or not all((path / f).is_file() for f in files):
        pytest.skip(missing_reason(name, what))
    return path


def require_mnist() -> Path:
    """The MNIST folder (``$DCFORMAT_MNIST``, else the shared ``mnist`` folder) holding all four IDX
    files; skips the calling test, naming the folder and the missing files, otherwise."""
    import pytest

    from dcformat.paper.mnist import MNISTNotFoundError, find_mnist_dir

    folder = shared_data("mnist")
    if folder is None:
        pytest.skip(missing_reason("mnist", "MNIST"))
    try:
        return find_mnist_dir(folder)
    except MNISTNotFoundError as error:
        pytest.skip(f"MNIST files missing from the shared data folder {folder}: {error}")
