"""The authors' released layout (.net + .prototxt): shapes, import without loss, byte-identical export, bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import dcformat
from dcformat import EncodeOptions, FormatError, QuantizedTensor
from dcformat.errors import DCFormatError, EncodeError, LimitError
from dcformat.interop.caffe import network_layers, parse_prototxt, read_net, write_net
from tests.support.paths import missing_reason, require_shared_data, shared_data_path

DATA = shared_data_path("squeezenet-deep-compression")
NET = DATA / "compressed_SqueezeNet.net"
PROTOTXT = DATA / "SqueezeNet_deploy.prototxt"
NET_BYTES = 675_763
WHAT = f"the authors' SqueezeNet files ({NET.name}, {PROTOTXT.name})"
MISSING = missing_reason("squeezenet-deep-compression", WHAT)

needs_data = pytest.mark.skipif(not (NET.is_file() and PROTOTXT.is_file()), reason=MISSING)


# -- an independent decoder, written from the data folder's README ---------------------


def authors_decode(data: bytes, layers) -> dict:
    """The README's rule, step by step: counts, then per layer codebook, bias, codes, indices."""
    buf = np.frombuffer(data, np.uint8)
    counts = np.frombuffer(data[: 4 * len(layers)], "<u4")
    pos = 4 * len(layers)
    out = {}
    for (name, shape, bits), n in zip(layers, counts):
        n = int(n)
        codebook = np.frombuffer(data[pos : pos + 4 * 2**bits], "<f4")
        pos += 4 * 2**bits
        bias = np.frombuffer(data[pos : pos + 4 * shape[0]], "<f4")
        pos += 4 * shape[0]
        if bits == 8:
            codes = buf[pos : pos + n]
            pos += n
        else:
            packed = buf[pos : pos + (n + 1) // 2]
            codes = np.stack([packed & 15, packed >> 4], axis=1).reshape(-1)[:n]
            pos += (n + 1) // 2
        packed = buf[pos : pos + (n + 1) // 2]
        d = np.stack([packed & 15, packed >> 4], axis=1).reshape(-1)[:n].astype(np.int64)
        pos += (n + 1) // 2
        p = np.cumsum(d + 1) - 1
        w = np.zeros(int(np.prod(shape)), np.float32)
        w[p] = codebook[codes]
        out[name] = (w.reshape(shape), bias, n)
    assert pos == len(data)
    return out


@pytest.fixture(scope="module")
def squeezenet():
    require_shared_data("squeezenet-deep-compression", NET.name, PROTOTXT.name, what=WHAT)
    return read_net(NET, PROTOTXT), NET.read_bytes()


# -- the network description -----------------------------------------------------------


@needs_data
def test_squeezenet_layer_shapes():
    specs = network_layers(PROTOTXT)
    assert len(specs) == 26
    by_name = {s.name: s for s in specs}
    assert specs[0].name == "conv1" and specs[0].weight_shape == (96, 3, 7, 7)
    assert by_name["fire2/conv1x1_1"].weight_shape == (16, 96, 1, 1)
    assert by_name["fire2/conv3x3_2"].weight_shape == (64, 16, 3, 3)
    assert by_name["fire3/conv1x1_1"].weight_shape == (16, 128, 1, 1)  # Concat of 64 + 64
    assert by_name["fire9/conv1x1_1"].weight_shape == (64, 512, 1, 1)
    assert specs[-1].name == "conv_final" and specs[-1].weight_shape == (1000, 512, 1, 1)
    assert all(s.bits == 8 and s.bias_shape == (s.weight_shape[0],) for s in specs)


SMALL_NET = """
name: "small"  # a comment
input: "data"
input_shape { dim: 1 dim: 3 dim: 9 dim: 9 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "side" type: "Convolution" bottom: "data" top: "side"
        convolution_param { num_output: 2 kernel_h: 3 kernel_w: 3 stride: 2 pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "side" top: "cat" }
layer { name: "pool" type: "Pooling" bottom: "cat" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool" top: "fc1" inner_product_param { num_output: 40 } }
layer { name: "ip2" type: "InnerProduct" bottom: "fc1" top: "ip2" inner_product_param { num_output: 3 } }
"""


def test_small_network_shapes():
    specs = network_layers(SMALL_NET)
    # "side" is a convolution not named conv/fc/ip: the authors' decoder leaves it out, but it still feeds Concat.
    assert [(s.name, s.bits, s.weight_shape) for s in specs] == [
        ("conv1", 8, (4, 3, 3, 3)),
        ("fc1", 4, (40, 6 * 2 * 2)),  # 9x9 -> conv s2 p1 -> 5x5 -> pool k3 s2 (Caffe rounds up) -> 2x2
        ("ip2", 4, (3, 40)),
    ]


def test_prototxt_syntax():
    msg = parse_prototxt('a: 1 b { c: "x\\"y" d: [1, 2] } b { } # end\n')
    assert msg["a"] == ["1"] and msg["b"][0]["c"] == ['x"y'] and msg["b"][0]["d"] == ["1", "2"] and len(msg["b"]) == 2
    for bad, line in [("a {\n b: 1\n", 3), ("a: 1\n}\n", 2), ("a: 1\nb: 'open\n", 2), ("{ }", 1)]:
        with pytest.raises(FormatError, match=f"line {line}"):
            parse_prototxt(bad)
    with pytest.raises(LimitError):
        parse_prototxt("a { " * 100 + "}" * 100)


def test_prototxt_graph_errors():
    with pytest.raises(FormatError, match="'nowhere'"):
        network_layers(
            'input: "data" layer { name: "conv1" type: "Convolution" bottom: "nowhere" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }'
        )
    with pytest.raises(FormatError, match="num_output"):
        network_layers('input: "data" layer { name: "conv1" type: "Convolution" bottom: "data" top: "c" convolution_param { kernel_size: 1 } }')


# -- the released file -----------------------------------------------------------------


@needs_data
def test_import_matches_the_authors_decoding(squeezenet):
    tensors, data = squeezenet
    specs = network_layers(PROTOTXT)
    reference = authors_decode(data, [(s.name, s.weight_shape, s.bits) for s in specs])
    assert len(tensors) == 2 * len(specs)
    for spec in specs:
        q = tensors[spec.name + ".weight"]
        w, bias, count = reference[spec.name]
        assert isinstance(q, QuantizedTensor) and q.shape == spec.weight_shape and q.dtype == np.float32
        assert q.entry_count == count  # one entry per file entry, fillers included
        assert q.codebook.size == 256 and q.codebook[0] == 0.0
        np.testing.assert_array_equal(q.dequantize(), w)
        assert tensors[spec.name + ".bias"].dtype == np.float32
        np.testing.assert_array_equal(tensors[spec.name + ".bias"], bias)
    total = sum(int(np.prod(s.weight_shape)) for s in specs)
    nonzero = sum(int(np.count_nonzero(reference[s.name][0])) for s in specs)
    assert 0.30 < nonzero / total < 0.36  # the README: about 33%


@needs_data
def test_dcf_is_smaller_and_exports_byte_identical(squeezenet, tmp_path):
    tensors, data = squeezenet
    assert len(data) == NET_BYTES
    path = tmp_path / "squeezenet.dcf"
    size = dcformat.save_file(tensors, path)  # automatic choices: the encoder may pick dense codes or other gap widths
    print(f"\nSqueezeNet: .net {len(data):,} bytes, .dcf {size:,} bytes ({size / len(data):.3f})")
    assert size < len(data)
    assert write_net(path, PROTOTXT) == data
    assert write_net(tensors, PROTOTXT) == data
    with dcformat.open(path) as f:
        for name, value in tensors.items():
            if name.endswith(".weight"):
                np.testing.assert_array_equal(f.get(name), value.dequantize())


@needs_data
@pytest.mark.parametrize(
    "options",
    [
        EncodeOptions(layout="sparse", gap_bits=2, coder="bitpack"),  # more fillers than the file
        EncodeOptions(layout="sparse", gap_bits=9, coder="bitpack"),
        EncodeOptions(layout="dense", coder="bitpack"),
    ],  # no entries at all
    ids=["gap2", "gap9", "dense"],
)
def test_export_does_not_depend_on_the_dcf_encoding(squeezenet, tmp_path, options):
    tensors, data = squeezenet
    path = tmp_path / "squeezenet.dcf"
    dcformat.save_file(tensors, path, options=options)
    with dcformat.open(path) as f:
        name = "conv_final.weight"
        if options.layout == "sparse" and options.gap_bits == 2:
            assert f.get_quantized(name).entry_count > tensors[name].entry_count
    assert write_net(path, PROTOTXT) == data


@needs_data
def test_export_from_dense_arrays(squeezenet):
    tensors, data = squeezenet
    arrays = {n: (v.dequantize() if isinstance(v, QuantizedTensor) else v) for n, v in tensors.items()}
    rebuilt = write_net(arrays, PROTOTXT)
    assert len(rebuilt) == len(data)
    # Codebooks are rebuilt from the values (sorted, unused entries gone), so only the decoded weights must match.
    specs = network_layers(PROTOTXT)
    layers = [(s.name, s.weight_shape, s.bits) for s in specs]
    again, first = authors_decode(rebuilt, layers), authors_decode(data, layers)
    for spec in specs:
        np.testing.assert_array_equal(again[spec.name][0], first[spec.name][0])
        assert again[spec.name][2] == first[spec.name][2]  # the same fillers


# -- a small 4-bit network, written then read -------------------------------------------


def small_weights(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for spec in network_layers(SMALL_NET):
        values = rng.choice(np.linspace(-1, 1, 2**spec.bits - 1, dtype=np.float32), size=spec.weight_shape)
        keep = rng.random(spec.weight_shape) < 0.15
        flat = keep.reshape(-1)
        flat[5:60] = False  # a run of zeros longer than 16: fillers
        out[spec.name + ".weight"] = np.where(keep, values, np.float32(0)).astype(np.float32)
        out[spec.name + ".bias"] = rng.normal(size=spec.weight_shape[0]).astype(np.float32)
    return out


def test_four_bit_layers_round_trip(tmp_path):
    weights = small_weights()
    data = write_net(weights, SMALL_NET)
    specs = network_layers(SMALL_NET)
    reference = authors_decode(data, [(s.name, s.weight_shape, s.bits) for s in specs])
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(SMALL_NET)
    net = tmp_path / "small.net"
    net.write_bytes(data)
    tensors = read_net(net, prototxt)
    for spec in specs:
        np.testing.assert_array_equal(reference[spec.name][0], weights[spec.name + ".weight"])
        np.testing.assert_array_equal(tensors[spec.name + ".weight"].dequantize(), weights[spec.name + ".weight"])
        np.testing.assert_array_equal(tensors[spec.name + ".bias"], weights[spec.name + ".bias"])
    fc1 = tensors["fc1.weight"]
    assert fc1.codebook.size == 16 and (fc1.codebook[fc1.codes] == 0).any()  # fillers were written and read back
    assert write_net(tensors, prototxt) == data


def test_write_net_rejects_what_it_cannot_store():
    weights = small_weights()
    with pytest.raises(EncodeError, match="ip2.bias"):
        write_net({k: v for k, v in weights.items() if k != "ip2.bias"}, SMALL_NET)
    with pytest.raises(EncodeError, match="shape"):
        write_net({**weights, "fc1.weight": weights["fc1.weight"][:, :5]}, SMALL_NET)
    with pytest.raises(EncodeError, match="distinct nonzero"):
        write_net({**weights, "fc1.weight": np.arange(1, 961, dtype=np.float32).reshape(40, 24)}, SMALL_NET)
    with pytest.raises(EncodeError, match="float32"):
        write_net({**weights, "ip2.bias": np.array([0.1, 0.2, 0.3])}, SMALL_NET)  # float64 values float32 cannot hold


# -- hostile files ----------------------------------------------------------------------


@pytest.fixture
def small_files(tmp_path):
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(SMALL_NET)
    data = write_net(small_weights(), SMALL_NET)
    return prototxt, data, tmp_path


def read_bytes(data: bytes, prototxt, tmp_path):
    net = tmp_path / "bad.net"
    net.write_bytes(data)
    return read_net(net, prototxt)


def test_truncated_files_name_the_layer(small_files):
    prototxt, data, tmp_path = small_files
    first_layer = 12 + 4 * 256 + 4 * 4
    for cut, where in [(0, "nz_num"), (10, "nz_num"), (first_layer, "conv1"), (len(data) - 1, "ip2"), (len(data) - 200, "fc1")]:
        with pytest.raises(FormatError, match=where) as info:
            read_bytes(data[:cut], prototxt, tmp_path)
        assert "truncated" in str(info.value) or "shorter" in str(info.value)


def test_extra_bytes_are_rejected(small_files):
    prototxt, data, tmp_path = small_files
    with pytest.raises(FormatError, match="1 bytes follow the last layer 'ip2'"):
        read_bytes(data + b"\0", prototxt, tmp_path)
    with pytest.raises(LimitError, match="more than"):
        read_bytes(data + b"\0" * 100_000, prototxt, tmp_path)


def test_bad_counts_positions_nibbles_and_codebooks(small_files):
    prototxt, data, tmp_path = small_files
    counts = np.frombuffer(data[:12], "<u4").copy()
    too_many = counts.copy()
    too_many[0] = 4 * 3 * 3 * 3 + 1
    with pytest.raises(FormatError, match=r"layers\['conv1'\].nz_num"):
        read_bytes(too_many.tobytes() + data[12:], prototxt, tmp_path)
    # Every index of ip2 set to 15: its entries run past the end of the weight.
    ip2_index = len(data) - (int(counts[2]) + 1) // 2
    bad = bytearray(data)
    bad[ip2_index:] = b"\xff" * (len(data) - ip2_index)
    if counts[2] % 2:
        bad[-1] = 0x0F  # the unused high nibble stays zero
    with pytest.raises(FormatError, match=r"layers\['ip2'\].index.*past"):
        read_bytes(bytes(bad), prototxt, tmp_path)
    if counts[2] % 2:  # the unused high nibble of the last index byte
        bad = bytearray(data)
        bad[-1] |= 0x10
        with pytest.raises(FormatError, match="unused high nibble"):
            read_bytes(bytes(bad), prototxt, tmp_path)
    bad = bytearray(data)
    bad[12 + 4 : 12 + 8] = np.float32(np.nan).tobytes()
    with pytest.raises(FormatError, match=r"conv1.*NaN"):
        read_bytes(bytes(bad), prototxt, tmp_path)


def test_random_corruption_never_escapes_as_another_error(small_files):
    prototxt, data, tmp_path = small_files
    rng = np.random.default_rng(1)
    for _ in range(40):
        bad = bytearray(data)
        for at in rng.integers(0, len(data), size=3):
            bad[at] = int(rng.integers(0, 256))
        cut = int(rng.integers(0, len(data) + 1)) if rng.random() < 0.3 else len(data)
        try:
            read_bytes(bytes(bad[:cut]), prototxt, tmp_path)
        except DCFormatError:
            pass


def test_metadata_ties_a_dcf_to_its_network(small_files):
    prototxt, data, tmp_path = small_files
    from dcformat.interop.convert import convert

    net = tmp_path / "small.net"
    net.write_bytes(data)
    dcf = tmp_path / "small.dcf"
    convert(net, dcf, prototxt=prototxt, options=EncodeOptions(coder="bitpack"))
    with dcformat.open(dcf) as f:
        assert f.metadata()["caffe.net.layers"] == ["conv1", "fc1", "ip2"]
    assert write_net(dcf, prototxt) == data
    other = tmp_path / "other.prototxt"
    other.write_text(SMALL_NET.replace('"ip2"', '"ip3"'))
    with pytest.raises(EncodeError, match="layers"):
        write_net(dcf, other)
    assert os.path.getsize(dcf) > 0
