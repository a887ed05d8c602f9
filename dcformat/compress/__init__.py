"""Post-training compression of any model's weights, for models nobody will retrain.

Deep Compression retrains after pruning and after quantizing; a model downloaded for
inference gets neither. What is left is choosing, per tensor, how coarsely to quantize
it, and this module's job is to choose well::

    tensors, report = compress_tensors(arrays)                   # name -> ndarray
    report = compress_file("model.safetensors", "model.dcf")     # or a .dcf as input

**The quantizer.** Every quantized tensor gets its own codebook: the weights are cut
into the cells of a uniform grid of step ``s`` and each cell is represented by the mean
of its weights (its k-means centroid: the grid is the paper's linear initialisation,
with one centroid per non-empty cell, and one update). With the codes Huffman-coded by
the encoder this is entropy-coded scalar quantization. Measured on MiniLM's layers,
further Lloyd iterations change the error by less than 0.05 dB at equal coded size, and
Huffman-coded k-means codebooks of ``2**bits`` entries lie within about 0.3 dB of it;
what the grid adds is a size tunable in quarter-bit steps, and outliers (trained
transformers have weights 100 standard deviations out) in cells of their own instead
of stretching every cell.

**The allocation.** For each tensor a ladder of steps (quarter-bit apart, scaled to the
bulk of its weights) gives candidates whose squared error and coded size (from the
histogram of their codes, as the encoder will code them) are computed on the sorted
weights with prefix sums, so no candidate is encoded. A candidate's *distortion* is
``importance x relative error``, the relative error being ``|W - Q(W)|^2 / |W|^2``:
to first order the relative error a layer adds to its output, and through the residual
stream to the model's output. A Lagrangian search picks one candidate per tensor so the
whole file fits ``target_bits_per_weight`` (every element of every tensor counted, raw
tensors, codebooks and the file's index included) at the least total distortion.
``importance`` weights kinds of tensors by name (:data:`TRANSFORMER_IMPORTANCE` by
default; :func:`importance_from_scores` turns measured per-tensor sensitivities into
one). Without it each tensor's relative error counts the same, which already gives
small tensors more bits than large ones.

Tensors that are not floats, that have fewer than two dimensions (biases, LayerNorm),
fewer than ``min_elements`` elements, or a name matching ``keep_dense`` are stored
exactly. ``bits`` fixes the codebook size of tensors (``quantize``'s k-means with at
most ``2**bits`` centroids); ``prune`` zeroes the smallest weights first (zeros stay
exactly zero and are not quantized). Without retraining pruning costs accuracy fast.
"""

from .files import compress_file
from .plan import CompressionPlan, compress_tensors, plan_compression
from .settings import (
    DEFAULT_MIN_ELEMENTS,
    DEFAULT_TARGET_BITS_PER_WEIGHT,
    TRANSFORMER_IMPORTANCE,
    importance_from_scores,
)

__all__ = [
    "DEFAULT_MIN_ELEMENTS",
    "DEFAULT_TARGET_BITS_PER_WEIGHT",
    "TRANSFORMER_IMPORTANCE",
    "CompressionPlan",
    "compress_file",
    "compress_tensors",
    "importance_from_scores",
    "plan_compression",
]
