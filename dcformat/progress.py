"""Progress bars: tqdm when it is installed and wanted, else nothing (tqdm is optional)."""

from __future__ import annotations

from collections.abc import Iterable


def progress(items: Iterable, *, enabled: bool, desc: str, total: int | None = None, unit: str = "tensor") -> Iterable:
    """``items`` wrapped in a tqdm bar counting ``unit``s (tensors unless said), or ``items``
    itself when the bar is unwanted, tqdm is missing, or there are fewer than two items (a
    bar for one is noise)."""
    if not enabled or (total is not None and total < 2):
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, total=total, unit=unit, leave=False)
