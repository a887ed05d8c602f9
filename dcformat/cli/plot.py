"""A picture of a ``.dcf`` file: where its bytes go, and what each codebook looks like.

``plot_file("model.dcf", "model.png")`` draws, from the file alone:

* a bar chart of the stored bytes of the largest tensors (quantized ones coloured by
  their encoding, exact ones grey), each labelled with its ratio against fp32, the rest
  summed in the title;
* for the largest quantized tensors, the histogram of their weight values with every
  codebook centroid marked below it. Its bins are the quantizer's cells (edges midway
  between centroids) and each bar's height is the share of entries using that centroid
  divided by the cell's width: the original weights' histogram at the resolution the
  file keeps. The counts come from the codes' histogram, so nothing is decoded per
  weight. The x range covers the central 99.9 % of the entries, so one outlier does not
  squash the picture; how many entries lie outside is written on the panel.

matplotlib is an optional extra (``pip install 'dcformat[plot]'``); it is imported here
only, and drawn without pyplot (no global state, no display needed).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import DCFormatError
from ..format.constants import Encoding
from ..format.reader import DCFile
from ..io.loading import open_file
from ..io.shards import ShardedFile
from .common import printable

#: At most this many histograms (the largest quantized tensors by stored bytes).
DEFAULT_MAX_HISTOGRAMS = 12
#: At most this many bars; the remaining tensors are summed in one.
DEFAULT_MAX_BARS = 24
_COLOURS = {"quant_sparse": "#1f77b4", "quant_dense": "#2ca02c", "raw": "#9a9a9a", "zstd": "#bdbdbd"}
#: The picture's formats, told by the output's extension.
FORMATS = ("png", "svg", "pdf")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
        from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    except ImportError:
        raise DCFormatError("plot error: drawing needs the package matplotlib (pip install 'dcformat[plot]')") from None
    return Figure, FigureCanvasAgg, Patch, FuncFormatter, LogLocator, NullLocator


def _short(name: str, width: int = 34) -> str:
    """A name from a file, escaped and shortened from the left (the end says the most)."""
    text = printable(name)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _layer_stats(reader: DCFile | ShardedFile, name: str) -> dict:
    entry = reader.entry(name)
    numel = int(np.prod(entry.shape, dtype=object))
    return dict(
        name=name,
        encoding=entry.encoding.name.lower() if isinstance(entry.encoding, Encoding) else str(entry.encoding),
        stored=int(entry.length),
        fp32=4 * numel,
        numel=numel,
    )


def plot_file(dcf_path, out_png, *, max_histograms: int = DEFAULT_MAX_HISTOGRAMS, max_bars: int = DEFAULT_MAX_BARS, dpi: int = 110) -> str:
    """Draw bytes per tensor and the codebook histograms of ``dcf_path`` (a ``.dcf`` or a sharded
    model's index) into ``out_png`` (a .png, .svg or .pdf, by its extension); returns the path.

    Raises :class:`~dcformat.DCFormatError` if the file is invalid or matplotlib is missing.
    """
    if isinstance(max_histograms, bool) or not isinstance(max_histograms, int) or max_histograms < 0:
        raise DCFormatError(f"plot error: max_histograms must be an integer >= 0, got {max_histograms!r}")
    if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 1:
        raise DCFormatError(f"plot error: max_bars must be an integer >= 1, got {max_bars!r}")
    dcf_path, out_png = os.fspath(dcf_path), os.fspath(out_png)
    picture = os.path.splitext(out_png)[1].lower().lstrip(".")
    if picture not in FORMATS:
        raise DCFormatError(f"plot error: {printable(out_png)}: name the picture .png, .svg or .pdf")
    Figure, FigureCanvasAgg, Patch, FuncFormatter, LogLocator, NullLocator = _matplotlib()  # noqa: N806 - matplotlib's classes, imported lazily
    with open_file(dcf_path) as reader:
        file_bytes = os.path.getsize(dcf_path)
        if isinstance(reader, ShardedFile):  # the index and every shard
            file_bytes += sum(os.path.getsize(os.path.join(reader.folder, shard)) for shard in reader.shards())
        layers = sorted((_layer_stats(reader, n) for n in reader.keys()), key=lambda s: -s["stored"])
        quantized = [s for s in layers if s["encoding"] in ("quant_dense", "quant_sparse")][:max_histograms]
        for stats in quantized:  # codebook and codes only: the counts per centroid are the histogram
            q = reader.get_quantized(stats["name"])
            stats["codebook"] = q.codebook.astype(np.float64)
            stats["counts"] = np.bincount(q.codes, minlength=q.codebook.size).astype(np.int64)
            stats["density"] = q.density

    columns = min(4, max(1, len(quantized)))
    hist_rows = math.ceil(len(quantized) / columns) if quantized else 0
    bars = layers[:max_bars]
    rest = layers[max_bars:]
    bar_count = len(bars)
    bar_height = max(2.2, 0.26 * bar_count + 1.0)
    fig = Figure(figsize=(4.2 * max(columns, 3), bar_height + 2.9 * hist_rows + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + hist_rows, columns, height_ratios=[bar_height] + [2.9] * hist_rows)
    fp32_total = sum(s["fp32"] for s in layers)
    ratio = f", {fp32_total / file_bytes:.2f}x smaller than fp32" if file_bytes else ""
    fig.suptitle(f"{_short(os.path.basename(dcf_path), 60)}: {len(layers)} tensors, {file_bytes:,} bytes{ratio}", fontsize=12)

    ax = fig.add_subplot(grid[0, :])
    labels = [_short(s["name"], 48) for s in bars]
    values = [s["stored"] for s in bars]
    colours = [_COLOURS.get(s["encoding"], "#7f7f7f") for s in bars]
    positions = np.arange(len(values))
    ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("stored bytes (in brackets: x smaller than fp32)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _bytes(value)))
    title = "bytes per tensor"
    if rest:  # summed in the title, not as a bar that would dwarf the others
        rest_stored, rest_fp32 = sum(s["stored"] for s in rest), sum(s["fp32"] for s in rest)
        title = f"bytes per tensor: the largest {len(bars)}; the other {len(rest)} hold {_bytes(rest_stored)}" + (
            f" ({rest_fp32 / rest_stored:.1f}x)" if rest_stored else ""
        )
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.18)
    for y, stats in zip(positions, bars):
        stored = stats["stored"]
        note = f"{_bytes(stored)}  ({stats['fp32'] / stored:.1f}x)" if stored else "0 B"
        ax.text(stored, y, "  " + note, va="center", fontsize=7)
    used = {s["encoding"] for s in bars}
    handles = [Patch(color=c, label=e) for e, c in _COLOURS.items() if e in used]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)

    for index, stats in enumerate(quantized):
        _histogram(fig.add_subplot(grid[1 + index // columns, index % columns]), stats, LogLocator, NullLocator)
    fig.savefig(out_png, format=picture)
    return out_png


def _cells(centres: np.ndarray) -> np.ndarray:
    """Edges of the quantizer's cells: midway between sorted centroids, the outer two mirrored."""
    if centres.size == 1:
        half = max(abs(float(centres[0])) * 0.05, 1e-12)
        return np.array([centres[0] - half, centres[0] + half])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _histogram(ax, stats: dict, LogLocator, NullLocator) -> None:  # noqa: N803 - matplotlib's classes
    """The weights' histogram at the quantizer's resolution: one bar per cell, height = entries / width."""
    codebook, counts = stats["codebook"], stats["counts"]
    order = np.argsort(codebook)
    codebook, counts = codebook[order], counts[order]
    keep = counts > 0
    if stats["density"] < 1:  # pruned weights are zeros, not a centroid of the trained values
        keep &= codebook != 0
    centres, weights = codebook[keep], counts[keep]
    total = int(weights.sum())
    outside = 0
    if total:
        if stats["density"] < 1 and centres[0] < 0 < centres[-1]:
            # pruning left a gap around zero: no cell spans it
            split = int(np.searchsorted(centres, 0.0))
            pieces = [(_cells(centres[:split]), weights[:split]), (_cells(centres[split:]), weights[split:])]
        else:
            pieces = [(_cells(centres), weights)]
        heights = [counts_here / np.maximum(np.diff(edges), np.finfo(np.float64).tiny) / total for edges, counts_here in pieces]
        peak = max(float(h.max()) for h in heights)
        for (edges, _), height in zip(pieces, heights):  # one artist per run of cells, not one per bar
            ax.stairs(height, edges, fill=True, color="#4c72b0", alpha=0.85, baseline=peak * 1e-6)
        starts = np.concatenate([edges[:-1] for edges, _ in pieces])
        ends = np.concatenate([edges[1:] for edges, _ in pieces])
        cumulative = np.cumsum(weights) / total
        first = min(int(np.searchsorted(cumulative, 0.0005)), centres.size - 1)
        last = min(int(np.searchsorted(cumulative, 0.9995)), centres.size - 1)
        low, high = starts[first], ends[last]
        ax.set_yscale("log")
        lowest = min(float(h[h > 0].min()) for h in heights if (h > 0).any())
        ax.set_ylim(max(peak * 1e-5, lowest / 3), peak * 2)
        ax.yaxis.set_major_locator(LogLocator(numticks=4))
        ax.yaxis.set_minor_locator(NullLocator())  # few ticks: readable, and fast to lay out
        ax.set_xlim(low, high)
        inside = (centres >= low) & (centres <= high)
        ax.vlines(centres[inside], 0.0, 0.05, transform=ax.get_xaxis_transform(), color="#d62728", linewidth=0.9 if inside.sum() <= 64 else 0.4)
        outside = int(weights[~inside].sum())
    ax.set_title(_short(stats["name"]), fontsize=8)
    detail = f"K={codebook.size}, {8 * stats['stored'] / stats['numel']:.2f} bits/weight" if stats["numel"] else f"K={codebook.size}"
    if stats["density"] < 0.999:
        detail += f", {100 * stats['density']:.1f}% nonzero"
    if outside:
        detail += f", {outside:,} off the axis"
    ax.set_xlabel(detail + "; red: centroids", fontsize=7)
    ax.set_ylabel("density", fontsize=7)
    ax.tick_params(labelsize=7)
