"""PyTorch adapter of dcformat: Deep Compression's pruning and trained quantization, and
export/import of ``.dcf`` files with the same verbs as ``safetensors.torch``.

``import dcformat`` never imports torch. This subpackage's names are loaded on first use
(``dcformat.torch.save_file`` imports torch then), so ``dcformat.paper.reproduce`` can set
up the process (OpenMP's wait policy) before torch is loaded.

Modules, one idea each:
  prune         magnitude pruning with fixed masks, iterative schedule
  quantize      1-D k-means weight sharing and centroid fine-tuning
  reparam       the computed-parameter mechanism both stages use (state visible in state_dict)
  selection     which parameters a stage works on, by state-dict name
  export        model / state dict <-> .dcf (save_file, save, load_file, load, load_model)
  decode        a decoder written in torch operations, to tensors on any device
                (decode_file(path, device="cuda"), bit-identical to the numpy decoder)
  report        per-layer sizes measured from a written file
  distributed   keeping masks and codebooks identical across processes
  calibration   input second moments and sensitivities from a few batches, for compress
  distill       trained quantization of a pretrained model by distillation (no labels)

The paper's MNIST experiments (models, training loops, recipes) are ``dcformat.paper``.
"""

from __future__ import annotations

import importlib

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "ConfigError": "errors",
    "ModelMismatchError": "errors",
    "load": "export",
    "load_file": "export",
    "load_model": "export",
    "save": "export",
    "save_file": "export",
    "to_dcformat": "export",
    "decode_file": "decode",
    "MagnitudePruner": "prune",
    "iterative_prune": "prune",
    "magnitude_mask": "prune",
    "TrainedQuantizer": "quantize",
    "cluster": "quantize",
    "share_weights": "quantize",
    "make_permanent": "reparam",
    "state_of": "reparam",
    "Calibration": "calibration",
    "calibrate": "calibration",
    "distill": "distill",
    "freeze": "distill",
    "install_latent": "distill",
    "FileReport": "report",
    "LayerReport": "report",
    "file_report": "report",
    "format_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
