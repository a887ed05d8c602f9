"""Per-layer size report of a written ``.dcf`` file, in the paper's table layout.

Every number is measured from the file: stored bytes per tensor from its directory
entry, bits per code and per gap from the sizes of its coded streams (``info()``), the
total from the file's size on disk (header, metadata and index included). The baseline
is fp32: 4 bytes per parameter, biases included, whatever dtype the file stores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

import dcformat

__all__ = ["FileReport", "LayerReport", "file_report", "format_report"]


@dataclass(frozen=True)
class LayerReport:
    name: str
    shape: tuple
    parameters: int
    #: Fraction of the tensor's elements that decode to nonzero.
    kept: float
    encoding: str
    #: Bits of the codes stream per stored entry (fillers included); None for dense tensors.
    code_bits: float | None
    #: Bits of the gaps stream per stored entry; None unless stored sparse.
    gap_bits: float | None
    #: Largest jump a gap can express is 2**gap_width; None unless sparse.
    gap_width: int | None
    codebook_size: int | None
    entry_count: int | None
    stored_bytes: int

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.parameters

    @property
    def percent_of_fp32(self) -> float:
        return 100.0 * self.stored_bytes / self.fp32_bytes if self.parameters else 0.0

    @property
    def ratio(self) -> float:
        return self.fp32_bytes / self.stored_bytes if self.stored_bytes else float("inf")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out.update(fp32_bytes=self.fp32_bytes, percent_of_fp32=self.percent_of_fp32, ratio=self.ratio)
        return out


@dataclass(frozen=True)
class FileReport:
    path: str
    file_bytes: int
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.parameters

    @property
    def ratio(self) -> float:
        """fp32 size of all tensors over the whole file's size."""
        return self.fp32_bytes / self.file_bytes if self.file_bytes else float("inf")

    @property
    def percent_of_fp32(self) -> float:
        return 100.0 * self.file_bytes / self.fp32_bytes if self.fp32_bytes else 0.0

    @property
    def overhead_bytes(self) -> int:
        """Header, padding, metadata and directory: the file minus its payloads."""
        return self.file_bytes - sum(layer.stored_bytes for layer in self.layers)

    def kept(self, names=None) -> float:
        """Fraction of nonzero elements over the named tensors (default: the quantized
        tensors of rank >= 2, i.e. the weights of fully connected and convolution layers)."""
        chosen = [
            layer
            for layer in self.layers
            if (layer.name in names if names is not None else layer.codebook_size is not None and len(layer.shape) >= 2)
        ]
        total = sum(layer.parameters for layer in chosen)
        return sum(layer.kept * layer.parameters for layer in chosen) / total if total else 0.0

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "parameters": self.parameters,
            "fp32_bytes": self.fp32_bytes,
            "ratio": self.ratio,
            "percent_of_fp32": self.percent_of_fp32,
            "overhead_bytes": self.overhead_bytes,
            "weights_kept": self.kept(),
            "layers": [layer.as_dict() for layer in self.layers],
        }


def file_report(path: str | os.PathLike) -> FileReport:
    """Measure a written file, tensor by tensor."""
    layers = []
    with dcformat.open(path) as dcf:
        for name in dcf.keys():
            info = dcf.info(name)
            parameters = int(np.prod(info.shape, dtype=object))
            layers.append(
                LayerReport(
                    name=name,
                    shape=tuple(info.shape),
                    parameters=parameters,
                    kept=float(info.density),
                    encoding=info.encoding,
                    code_bits=info.code_bits,
                    gap_bits=info.gap_bits,
                    gap_width=info.gap_width,
                    codebook_size=info.codebook_size,
                    entry_count=info.entry_count,
                    stored_bytes=int(info.stored_bytes),
                )
            )
    return FileReport(path=os.fspath(path), file_bytes=os.path.getsize(path), layers=layers)


def _fmt(value, spec: str, missing: str = "-") -> str:
    """``value`` formatted by ``spec``; ``missing`` (right-aligned to the spec's width) for None."""
    if value is None:
        width = spec.split(".")[0].rstrip("df")
        return missing.rjust(int(width)) if width.isdigit() else missing
    return format(value, spec)


def _pct(value, spec: str) -> str:
    width = int(spec.split(".")[0]) + 1
    return f"{'-':>{width}}" if value is None else format(value, spec) + "%"


def format_report(report: FileReport, *, reference: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The report as a text table; ``reference`` adds the paper's numbers per layer name
    (keys ``kept``, ``weight_bits``, ``index_bits``, ``percent``; ``"total"`` for the total)."""
    reference = reference or {}
    header = f"{'layer':<14}{'shape':<16}{'kept':>7}{'w bits':>8}{'i bits':>8}{'gap w':>6}{'bytes':>9}{'% fp32':>8}{'ratio':>8}"
    if reference:
        header += "   | paper: kept  w bits  i bits  % fp32"
    lines = [header, "-" * len(header)]
    for layer in report.layers:
        shape = "x".join(str(d) for d in layer.shape) or "scalar"
        line = (
            f"{layer.name:<14}{shape:<16}{100 * layer.kept:>6.1f}%{_fmt(layer.code_bits, '.2f'):>8}"
            f"{_fmt(layer.gap_bits, '.2f'):>8}{_fmt(layer.gap_width, 'd'):>6}{layer.stored_bytes:>9}"
            f"{layer.percent_of_fp32:>7.2f}%{layer.ratio:>7.1f}x"
        )
        paper = reference.get(layer.name)
        if paper:
            line += (
                f"   |  {_pct(paper.get('kept'), '5.0f')} {_fmt(paper.get('weight_bits'), '7.1f')} "
                f"{_fmt(paper.get('index_bits'), '7.1f')} {_pct(paper.get('percent'), '7.2f')}"
            )
        lines.append(line)
    lines.append("-" * len(header))
    total = (
        f"{'total':<14}{report.parameters:<16}{100 * report.kept():>6.1f}%{'':>8}{'':>8}{'':>6}"
        f"{report.file_bytes:>9}{report.percent_of_fp32:>7.2f}%{report.ratio:>7.1f}x"
    )
    paper = reference.get("total")
    if paper:
        total += f"   |  {_pct(paper.get('kept'), '5.0f')} {'':>7} {'':>7} {_pct(paper.get('percent'), '7.2f')}"
    lines.append(total)
    lines.append(
        f"file {report.file_bytes} bytes (of which {report.overhead_bytes} header, metadata, directory and padding) "
        f"vs fp32 {report.fp32_bytes} bytes: {report.ratio:.1f}x smaller"
    )
    return "\n".join(lines)
