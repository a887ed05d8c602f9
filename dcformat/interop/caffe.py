"""The authors' released Deep Compression layout (``.net`` + Caffe ``.prototxt``), both ways.

The authors of Deep Compression released a compressed SqueezeNet as a headerless
``.net`` file read by their own decoder (spec section 13, informative). Per compressed
layer it holds a codebook, the raw biases, one code per stored entry and one 4-bit
relative index per entry; the shapes, bit widths and even the layer count come from the
network's ``.prototxt``. Layout, in file order, all little-endian:

* ``uint32 nz_num[L]``: entries per compressed layer (fillers included), for the L
  Convolution/InnerProduct layers whose name contains ``conv``, ``fc`` or ``ip``;
* per layer: ``float32 codebook[2**bits]`` (bits = 8 when the name contains ``conv``,
  else 4; entry 0 holds 0.0), ``float32 bias[num_output]``, the codes (``uint8[n]`` at 8
  bits, ``uint8[ceil(n/2)]`` of two nibbles at 4 bits, low nibble first), and the
  relative indices ``uint8[ceil(n/2)]``, two nibbles per byte, low nibble first.

Entry i sits at ``p = cumsum(d + 1) - 1``: exactly the quant_sparse rule at gap width 4,
so :func:`read_net` imports a file entry for entry, fillers included, without loss, and
:func:`write_net` rebuilds the authors' bytes from any stored form of the same weights.

The ``.prototxt`` parser here reads just enough of protobuf's text format to find each
compressed layer's weight shape: layer names and types, ``num_output``, kernel sizes,
strides, pads and groups, and channel counts through the graph (Concat sums channels).

As the format ``net`` of :func:`dcformat.interop.convert.convert` (both ways it needs the
``.prototxt``): reading records the compressed layers' names under the metadata key
:data:`METADATA_KEY`; writing checks them against the ``.prototxt`` when they are there,
writes the network's ``<layer>.weight`` and ``<layer>.bias`` tensors, and leaves out (and
notes in the report) any other tensor. Quantized weights stay quantized both ways; dense
weights must already fit the layer's codebook (quantize them first). Metadata is lost: a
``.net`` holds none.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import EncodeError, FormatError, LimitError, UnsupportedError
from ..format import sparse as gaps_codec
from ..format.reader import DCFile
from ..io.atomic import write_bytes
from ..quantize import QuantizedTensor
from .common import Format, Read, Written, metadata_list

#: Gap width of the authors' relative indices (4-bit nibbles).
GAP_BITS = 4
#: Largest .prototxt read (the SqueezeNet one is 10 KiB).
MAX_PROTOTXT_BYTES = 16 * 1024 * 1024
#: Deepest nesting of ``{ }`` blocks accepted in a .prototxt.
MAX_PROTOTXT_DEPTH = 64
#: Largest weight tensor accepted from a .prototxt (elements); bounds what a .net can make us allocate.
MAX_LAYER_ELEMENTS = 1 << 34
#: Name suffixes of the imported tensors.
WEIGHT, BIAS = ".weight", ".bias"

_COMPRESSED_TYPES = {"Convolution": "conv", "CONVOLUTION": "conv", "4": "conv", "InnerProduct": "fc", "INNER_PRODUCT": "fc", "14": "fc"}
_CONCAT_TYPES = {"Concat", "CONCAT", "3"}
_POOLING_TYPES = {"Pooling", "POOLING", "17"}
_FLATTEN_TYPES = {"Flatten", "FLATTEN", "8"}
_INPUT_TYPES = {"Input"}


# ======================================================================================
# A minimal reader of protobuf's text format
# ======================================================================================

_TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<punct>[{}\[\]:<>,;])
      | (?P<word>[^\s{}\[\]:<>,;"'\#]+)""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


class _Message(dict):
    """A parsed text-format message: field name -> list of values (str or _Message)."""

    def first(self, key: str, default=None):
        values = self.get(key)
        return values[0] if values else default

    def all(self, key: str) -> list:
        return self.get(key, [])


def parse_prototxt(text: str, *, source: str = "prototxt") -> _Message:
    """Parse protobuf text format into nested dicts of lists; scalars stay strings.

    Only the syntax is checked (this reader knows no schema): unknown fields are kept
    and ignored by the caller. Errors name the line.
    """
    root = _Message()
    stack = [root]
    field: str | None = None  # a field name waiting for its value
    in_list = False
    line = 1
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FormatError(f"{source}: line {line}", f"unexpected character {text[pos]!r}")
        kind, token = match.lastgroup, match.group()
        pos = match.end()
        here = line
        line += token.count("\n")
        if kind == "space":
            continue
        if kind == "punct":
            if token in "{<":
                if field is None:
                    raise FormatError(f"{source}: line {here}", "a block opens without a field name")
                if len(stack) > MAX_PROTOTXT_DEPTH:
                    raise LimitError(f"{source}: line {here}", f"blocks nested deeper than {MAX_PROTOTXT_DEPTH}")
                child = _Message()
                stack[-1].setdefault(field, []).append(child)
                stack.append(child)
                field = None
            elif token in "}>":
                if field is not None or len(stack) == 1:
                    raise FormatError(f"{source}: line {here}", f"unexpected {token!r}")
                stack.pop()
            elif token == ":":
                if field is None:
                    raise FormatError(f"{source}: line {here}", "':' without a field name")
            elif token == "[":
                if field is None or in_list:
                    raise FormatError(f"{source}: line {here}", "unexpected '['")
                in_list = True
            elif token == "]":
                if not in_list:
                    raise FormatError(f"{source}: line {here}", "unexpected ']'")
                in_list = False
                field = None
            # ',' and ';' separate values and fields; nothing to do
            continue
        if field is None:
            if kind != "word":
                raise FormatError(f"{source}: line {here}", f"expected a field name, got {token[:40]!r}")
            field = token
            continue
        value = _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), token[1:-1]) if kind == "string" else token
        stack[-1].setdefault(field, []).append(value)
        if not in_list:
            field = None
    if field is not None or in_list or len(stack) != 1:
        raise FormatError(f"{source}: line {line}", "the text ends inside a field or block")
    return root


# ======================================================================================
# Shapes of the compressed layers
# ======================================================================================


@dataclass(frozen=True)
class LayerSpec:
    """One compressed layer of the authors' layout, in file order."""

    name: str
    type: str  # "conv" or "fc"
    bits: int  # 8 or 4: the codebook has 2**bits entries
    weight_shape: tuple
    bias_shape: tuple

    @property
    def numel(self) -> int:
        return math.prod(self.weight_shape)


def _int(message: _Message, key: str, default: int | None, *, where: str) -> int | None:
    value = message.first(key)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise FormatError(f"{where}.{key}", f"expected an integer, got {str(value)[:40]!r}") from None
    if number < 0 or number > (1 << 40):
        raise FormatError(f"{where}.{key}", f"{number} is out of range")
    return number


def _pair(message: _Message, key: str, key_h: str, key_w: str, default: int | None, *, where: str) -> tuple:
    """A Caffe size given as repeated ``key`` (one value for both axes) or as ``key_h``/``key_w``."""
    h, w = _int(message, key_h, None, where=where), _int(message, key_w, None, where=where)
    if h is not None or w is not None:
        if h is None or w is None:
            raise FormatError(where, f"{key_h} and {key_w} must be given together")
        return h, w
    values = message.all(key)
    if len(values) > 2:
        raise UnsupportedError(f"{where}.{key}", f"{len(values)} values: only 2-D layers are supported")
    if not values:
        return default, default
    first = _int(message, key, None, where=where)
    second = first if len(values) == 1 else _int(_Message({key: values[1:]}), key, None, where=where)
    return first, second


def _conv_out(size: int | None, kernel: int, stride: int, pad: int, dilation: int) -> int | None:
    if size is None:
        return None
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _pool_out(size: int | None, kernel: int, stride: int, pad: int) -> int | None:
    """Caffe's pooling rounds up, then drops a last window that starts in the padding."""
    if size is None:
        return None
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _inputs(net: _Message, *, source: str) -> dict:
    """Blob shapes (C, H, W) of the network's declared inputs; H and W may be None."""
    blobs = {}
    names = net.all("input")
    dims = [_int(_Message(input_dim=[d]), "input_dim", None, where=source) for d in net.all("input_dim")]
    shapes = net.all("input_shape")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise FormatError(f"{source}: input", "an input name must be a string")
        if len(dims) >= 4 * (i + 1):
            shape = dims[4 * i : 4 * i + 4]
        elif i < len(shapes) and isinstance(shapes[i], _Message):
            shape = [_int(_Message(dim=[d]), "dim", None, where=source) for d in shapes[i].all("dim")]
        else:
            shape = []
        blobs[name] = _chw(shape)
    return blobs


def _chw(shape: list) -> tuple:
    """(C, H, W) of an N x C x H x W blob; a network without declared dims reads images (3 channels)."""
    if len(shape) >= 4:
        return (shape[1], shape[2], shape[3])
    if len(shape) == 2:
        return (shape[1], 1, 1)
    return (3, None, None)


def network_layers(prototxt, *, source: str | None = None) -> list[LayerSpec]:
    """The compressed layers of a network description, in the order of the ``.net`` file.

    ``prototxt`` is a path or the text itself. Channel counts follow the graph from the
    input (3 channels when no dims are declared); Concat sums channels along axis 1.
    """
    text, source = _read_prototxt(prototxt, source)
    net = parse_prototxt(text, source=source)
    blobs = _inputs(net, source=source)
    layers = net.all("layer") or net.all("layers")
    specs = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, _Message):
            raise FormatError(f"{source}: layer[{index}]", "a layer must be a block")
        name = layer.first("name", f"layer{index}")
        kind = layer.first("type", "")
        where = f"{source}: layer {name!r}"
        bottoms, tops = layer.all("bottom"), layer.all("top")
        if not all(isinstance(b, str) for b in bottoms + tops) or not isinstance(name, str) or not isinstance(kind, str):
            raise FormatError(where, "name, type, bottom and top must be scalars")
        if kind in _INPUT_TYPES:
            shapes = layer.first("input_param", _Message()).all("shape")
            for i, top in enumerate(tops):
                dims = shapes[i].all("dim") if i < len(shapes) and isinstance(shapes[i], _Message) else []
                blobs[top] = _chw([_int(_Message(dim=[d]), "dim", None, where=where) for d in dims])
            continue
        missing = [b for b in bottoms if b not in blobs]
        if missing:
            raise FormatError(where + ".bottom", f"blob {missing[0]!r} is not produced by any earlier layer or input")
        inputs = [blobs[b] for b in bottoms]
        if kind in _COMPRESSED_TYPES:
            if len(inputs) != 1:
                raise UnsupportedError(where + ".bottom", f"a {kind} layer with {len(inputs)} inputs is not supported")
            spec, out = _parameterised(layer, kind, name, inputs[0], where=where)
            if spec is not None:
                specs.append(spec)
        elif kind in _CONCAT_TYPES:
            param = layer.first("concat_param", _Message())
            axis = _int(param, "axis", None, where=where + ".concat_param")
            if axis is None:
                axis = _int(param, "concat_dim", 1, where=where + ".concat_param")
            if axis != 1:
                raise UnsupportedError(where + ".concat_param.axis", f"concatenation along axis {axis}: only channels (1) are supported")
            if not inputs:
                raise FormatError(where, "Concat without inputs")
            out = (sum(c for c, _, _ in inputs), inputs[0][1], inputs[0][2])
        elif kind in _POOLING_TYPES:
            out = _pooled(layer.first("pooling_param", _Message()), inputs[0], where=where) if inputs else (3, None, None)
        elif kind in _FLATTEN_TYPES:
            c, h, w = inputs[0]
            out = (c * h * w, 1, 1) if h is not None and w is not None else (c, None, None)
        else:  # element-wise layers (ReLU, Dropout, LRN, Softmax, ...) keep their input's shape
            out = inputs[0] if inputs else (3, None, None)
        for top in tops:
            blobs[top] = out
    return specs


def _parameterised(layer: _Message, kind: str, name: str, chw: tuple, *, where: str):
    c, h, w = chw
    family = _COMPRESSED_TYPES[kind]
    param = layer.first("convolution_param" if family == "conv" else "inner_product_param", _Message())
    where_param = where + (".convolution_param" if family == "conv" else ".inner_product_param")
    num_output = _int(param, "num_output", None, where=where_param)
    if not num_output:
        raise FormatError(where_param + ".num_output", "missing or zero")
    if family == "conv":
        kh, kw = _pair(param, "kernel_size", "kernel_h", "kernel_w", None, where=where_param)
        if not kh or not kw:
            raise FormatError(where_param + ".kernel_size", "missing or zero")
        sh, sw = _pair(param, "stride", "stride_h", "stride_w", 1, where=where_param)
        ph, pw = _pair(param, "pad", "pad_h", "pad_w", 0, where=where_param)
        dh, dw = _pair(param, "dilation", "dilation_h", "dilation_w", 1, where=where_param)
        group = _int(param, "group", 1, where=where_param)
        if not sh or not sw or not dh or not dw or not group or c % group:
            raise FormatError(where_param, f"stride, dilation and group must be positive, and group must divide the {c} input channels")
        weight_shape = (num_output, c // group, kh, kw)
        out = (num_output, _conv_out(h, kh, sh, ph, dh), _conv_out(w, kw, sw, pw, dw))
    else:
        axis = _int(param, "axis", 1, where=where_param)
        if axis != 1:
            raise UnsupportedError(where_param + ".axis", f"InnerProduct along axis {axis} is not supported")
        if h is None or w is None:
            raise FormatError(where, "the input's spatial size is unknown, so the InnerProduct weight shape is too; declare the input dims")
        weight_shape = (num_output, c * h * w)
        out = (num_output, 1, 1)
    if not any(tag in name for tag in ("conv", "fc", "ip")):
        return None, out  # the authors' decoder compresses only layers named so
    if str(param.first("bias_term", "true")).lower() in ("false", "0"):
        raise UnsupportedError(where_param + ".bias_term", "the authors' layout stores a bias for every compressed layer")
    numel = math.prod(weight_shape)
    if numel > MAX_LAYER_ELEMENTS:
        raise LimitError(where, f"weight shape {weight_shape} has {numel} elements, over the limit of {MAX_LAYER_ELEMENTS}")
    bits = 8 if "conv" in name else 4
    return LayerSpec(name, family, bits, weight_shape, (num_output,)), out


def _pooled(param: _Message, chw: tuple, *, where: str) -> tuple:
    c, h, w = chw
    where = where + ".pooling_param"
    if str(param.first("global_pooling", "false")).lower() in ("true", "1"):
        return (c, 1, 1)
    kh, kw = _pair(param, "kernel_size", "kernel_h", "kernel_w", None, where=where)
    sh, sw = _pair(param, "stride", "stride_h", "stride_w", 1, where=where)
    ph, pw = _pair(param, "pad", "pad_h", "pad_w", 0, where=where)
    if not kh or not kw or not sh or not sw:
        return (c, None, None)  # spatial size unknown from here on; channels still known
    return (c, _pool_out(h, kh, sh, ph), _pool_out(w, kw, sw, pw))


def _read_prototxt(prototxt, source: str | None) -> tuple[str, str]:
    if isinstance(prototxt, str) and ("{" in prototxt or "\n" in prototxt):
        text = prototxt
        source = source or "prototxt"
    else:
        path = os.fspath(prototxt)
        source = source or os.path.basename(path)
        size = os.path.getsize(path)
        if size > MAX_PROTOTXT_BYTES:
            raise LimitError(source, f"{size} bytes is over the limit of {MAX_PROTOTXT_BYTES} for a .prototxt")
        with open(path, "rb") as f:
            data = f.read(MAX_PROTOTXT_BYTES + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(source, f"not valid UTF-8 ({exc.reason})", offset=exc.start) from None
    return text, source


# ======================================================================================
# Reading a .net file
# ======================================================================================


def _layer_bytes(spec: LayerSpec, entries: int) -> int:
    codes = entries if spec.bits == 8 else (entries + 1) // 2
    return 4 * (1 << spec.bits) + 4 * spec.bias_shape[0] + codes + (entries + 1) // 2


def _nibbles(packed: np.ndarray, count: int) -> np.ndarray:
    """Two 4-bit values per byte, low nibble first; the first ``count`` of them."""
    out = np.empty(2 * packed.size, dtype=np.uint8)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    return out[:count]


def _pack_nibbles(values: np.ndarray) -> bytes:
    values = values.astype(np.uint8, copy=False)
    if values.size % 2:
        values = np.concatenate([values, np.zeros(1, np.uint8)])
    return (values[0::2] | (values[1::2] << 4)).astype(np.uint8).tobytes()


def read_net(net_path, prototxt_path) -> dict:
    """Import an authors' ``.net`` file: ``{"<layer>.weight": QuantizedTensor, "<layer>.bias": float32 array}``.

    Every weight keeps the file's entries one for one, fillers included: the codebook as
    stored (entry 0 = 0.0), positions ``cumsum(d + 1) - 1``, codes as stored. Sizes are
    checked against the file before anything is read; a bad file raises
    :class:`~dcformat.FormatError` naming the layer and the byte offset.
    """
    specs = network_layers(prototxt_path)
    source = os.path.basename(os.fspath(net_path))
    if not specs:
        raise FormatError(os.fspath(prototxt_path), "no compressed layer (Convolution/InnerProduct named conv, fc or ip) in the network")
    size = os.path.getsize(net_path)
    # The largest file these layers can make: every layer with one entry per element.
    largest = 4 * len(specs) + sum(_layer_bytes(s, s.numel) for s in specs)
    if size > largest:
        raise LimitError(source, f"{size} bytes is more than the {largest} bytes these {len(specs)} layers can take; wrong .prototxt?")
    header = 4 * len(specs)
    if size < header:
        raise FormatError(f"{source}: nz_num", f"file of {size} bytes is shorter than the {header}-byte table of entry counts", offset=0)
    with open(net_path, "rb") as f:
        data = np.frombuffer(f.read(size), dtype=np.uint8)
    counts = data[:header].view("<u4").astype(np.int64)
    out: dict = {}
    pos = header
    for i, (spec, count) in enumerate(zip(specs, counts)):  # per layer, never per entry
        count = int(count)
        where = f"{source}: layers[{spec.name!r}]"
        if count > spec.numel:
            raise FormatError(where + ".nz_num", f"{count} entries cannot fit in the {spec.numel} weights of shape {spec.weight_shape}", offset=4 * i)
        need = _layer_bytes(spec, count)
        if size - pos < need:
            raise FormatError(where, f"truncated: the layer needs {need} bytes ({count} entries), {size - pos} are left", offset=pos)
        cb_bytes, bias_bytes = 4 * (1 << spec.bits), 4 * spec.bias_shape[0]
        codebook = data[pos : pos + cb_bytes].view("<f4").astype(np.float32)
        if not np.isfinite(codebook).all():
            raise FormatError(where + ".codebook", "codebook holds NaN or infinity", offset=pos)
        pos += cb_bytes
        bias = data[pos : pos + bias_bytes].view("<f4").astype(np.float32)
        pos += bias_bytes
        half = (count + 1) // 2
        if spec.bits == 8:
            codes = data[pos : pos + count].copy()
            pos += count
        else:
            _check_last_nibble(data[pos : pos + half], count, where + ".codes", pos)
            codes = _nibbles(data[pos : pos + half], count)
            pos += half
        _check_last_nibble(data[pos : pos + half], count, where + ".index", pos)
        gap_symbols = _nibbles(data[pos : pos + half], count)
        if count and gaps_codec.last_position(gap_symbols) >= spec.numel:
            raise FormatError(
                where + ".index",
                f"entries run to position {gaps_codec.last_position(gap_symbols)}, past the {spec.numel} weights of shape {spec.weight_shape}",
                offset=pos,
            )
        pos += half
        positions = np.cumsum(gap_symbols.astype(np.int64) + 1) - 1
        out[spec.name + WEIGHT] = QuantizedTensor.from_entries(spec.weight_shape, codebook, positions, codes, dtype=np.float32)
        out[spec.name + BIAS] = bias
    if pos != size:
        raise FormatError(f"{source}: end", f"{size - pos} bytes follow the last layer {specs[-1].name!r}; wrong .prototxt?", offset=pos)
    return out


def _check_last_nibble(packed: np.ndarray, count: int, field: str, offset: int) -> None:
    """An odd count leaves the last high nibble unused; it must be 0 (else it could not be written back)."""
    if count % 2 and packed[-1] >> 4:
        raise FormatError(field, "the unused high nibble after the last entry is not zero", offset=offset + packed.size - 1)


# ======================================================================================
# Writing a .net file
# ======================================================================================


def _tensors_from_dcf(path, specs: list[LayerSpec]) -> dict:
    wanted = [s.name + suffix for s in specs for suffix in (WEIGHT, BIAS)]
    out = {}
    with DCFile(path) as reader:
        layers = reader.metadata().get(METADATA_KEY)
        if layers is not None and layers != [s.name for s in specs]:
            raise EncodeError(f"the file was imported from a network with layers {layers}, the .prototxt has {[s.name for s in specs]}")
        for name in wanted:
            if name not in reader:
                continue  # reported below, with every other missing name
            out[name] = reader.get_stored(name)
    return out


#: Metadata key a converted .net file carries: its compressed layers, in file order.
METADATA_KEY = "caffe.net.layers"


def _authors_codebook(value, spec: LayerSpec, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codebook of 2**bits float32 with entry 0 = 0.0, positions, codes) of a layer's nonzero weights."""
    size = 1 << spec.bits
    if isinstance(value, QuantizedTensor):
        if tuple(value.shape) != spec.weight_shape:
            raise EncodeError(f"shape {tuple(value.shape)} differs from {spec.weight_shape} in the .prototxt", field=name)
        codebook = value.codebook.astype(np.float32)
        if codebook.astype(np.float64).tolist() != value.codebook.astype(np.float64).tolist():
            raise EncodeError("codebook values are not exactly float32", field=name)
        real = codebook[value.codes] != 0  # fillers and stored zeros: fillers are redrawn below
        positions, codes = value.positions[real], value.codes[real]
        if codebook.size == size and codebook[0] == 0:
            return codebook, positions, codes.astype(np.uint8)
        values = codebook[codes]
    else:
        array = np.asarray(value)
        if tuple(array.shape) != spec.weight_shape:
            raise EncodeError(f"shape {tuple(array.shape)} differs from {spec.weight_shape} in the .prototxt", field=name)
        if array.dtype.kind != "f":
            raise EncodeError(f"weights must be floating point, not {array.dtype}", field=name)
        flat = array.reshape(-1)
        positions = np.flatnonzero(flat)
        values = flat[positions].astype(np.float32)
        if not np.array_equal(values.astype(np.float64), flat[positions].astype(np.float64)) or not np.isfinite(values).all():
            raise EncodeError("weights are not all finite float32 values", field=name)
    distinct = np.unique(values)
    if distinct.size > size - 1:
        raise EncodeError(
            f"{distinct.size} distinct nonzero weights do not fit a {size}-entry codebook with entry 0 = 0.0; "
            f"quantize first (dcformat.quantize(w, bits={spec.bits}))",
            field=name,
        )
    codebook = np.zeros(size, dtype=np.float32)
    codebook[1 : 1 + distinct.size] = distinct
    codes = (np.searchsorted(distinct, values) + 1).astype(np.uint8)
    return codebook, positions, codes


def write_net(tensors_or_dcf, prototxt_path) -> bytes:
    """The authors' ``.net`` bytes of a network's weights.

    ``tensors_or_dcf`` is a mapping (``"<layer>.weight"`` -> QuantizedTensor or array,
    ``"<layer>.bias"`` -> array) or the path of a ``.dcf`` file. Fillers are redrawn by
    the authors' rule (a filler of gap 15 and code 0 before each run of 16 zeros), so
    the entries do not depend on how the ``.dcf`` encoder stored them: for a file made
    by :func:`read_net` the bytes are the original ones.
    """
    specs = network_layers(prototxt_path)
    if isinstance(tensors_or_dcf, Mapping):
        tensors = tensors_or_dcf
    else:
        tensors = _tensors_from_dcf(tensors_or_dcf, specs)
    missing = [s.name + suffix for s in specs for suffix in (WEIGHT, BIAS) if s.name + suffix not in tensors]
    if missing:
        raise EncodeError(f"the .prototxt needs tensors that are not given: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    counts, chunks = [], []
    for spec in specs:  # per layer; all work inside is vectorised
        name = spec.name + WEIGHT
        codebook, positions, codes = _authors_codebook(tensors[name], spec, name)
        wire_gaps, wire_codes = gaps_codec.with_fillers(gaps_codec.true_gaps(positions.astype(np.int64)), codes, GAP_BITS, 0)
        if wire_codes.size >= 1 << 32:
            raise EncodeError(f"{wire_codes.size} entries do not fit the file's 32-bit count", field=name)
        bias = np.asarray(tensors[spec.name + BIAS])
        bias32 = bias.astype("<f4")
        if bias.shape != spec.bias_shape or not np.array_equal(bias32.astype(np.float64), bias.astype(np.float64)):
            raise EncodeError(f"must be {spec.bias_shape[0]} float32 values (got shape {bias.shape}, dtype {bias.dtype})", field=spec.name + BIAS)
        counts.append(wire_codes.size)
        chunks.append(codebook.astype("<f4").tobytes())
        chunks.append(bias32.tobytes())
        chunks.append(wire_codes.astype(np.uint8).tobytes() if spec.bits == 8 else _pack_nibbles(wire_codes))
        chunks.append(_pack_nibbles(wire_gaps))
    return np.asarray(counts, dtype="<u4").tobytes() + b"".join(chunks)


# ======================================================================================
# The format, for the registry
# ======================================================================================


def _check(role: str, context) -> None:
    if context.prototxt is None:
        raise EncodeError("reading or writing a .net file needs the network's .prototxt (prototxt=..., --prototxt)")


def _read(path, context) -> Read:
    tensors = read_net(path, context.prototxt)
    return Read(tensors, {METADATA_KEY: [s.name for s in network_layers(context.prototxt)]})


def _write(tensors: Mapping, path, metadata: dict, context) -> Written:
    prototxt = context.prototxt
    layers = metadata_list(metadata, METADATA_KEY)
    specs = network_layers(prototxt)
    if layers is not None and layers != [s.name for s in specs]:
        raise EncodeError(f"the weights come from a network with layers {layers[:3]}..., not the one in {os.fspath(prototxt)!r}")
    write_bytes(write_net(tensors, prototxt), path)
    wanted = {s.name + suffix for s in specs for suffix in (WEIGHT, BIAS)}
    left_out = sorted(set(tensors) - wanted)
    notes = ()
    if left_out:
        notes = (f"not in the network, left out: {left_out[:10]}{' ...' if len(left_out) > 10 else ''}",)
    return Written([], notes)  # quantized weights stay quantized: nothing is dequantized


FORMAT = Format("net", (".net",), read=_read, write=_write, check=_check)

__all__ = ["FORMAT", "LayerSpec", "METADATA_KEY", "network_layers", "parse_prototxt", "read_net", "write_net"]
