"""Conversions: safetensors, torch, npz, ONNX and .dcf both ways; the convert subcommand; bad input files."""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import pickle
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import dcformat
from dcformat import EncodeError, EncodeOptions, FormatError, QuantizedTensor
from dcformat.errors import DCFormatError, LimitError, UnsupportedError
from dcformat.interop.convert import (
    convert,
    read_npz,
    read_onnx,
    read_safetensors,
    read_torch,
    write_npz,
    write_safetensors,
    write_torch,
)
from tests.support.optional import ML_DTYPES_REASON
from tests.support.paths import REPO_ROOT

try:  # optional: without it the bfloat16 cases skip and the rest runs
    import ml_dtypes
except ImportError:
    ml_dtypes = None
BF16 = np.dtype(ml_dtypes.bfloat16) if ml_dtypes is not None else None


def needs_bfloat16() -> None:
    pytest.importorskip("ml_dtypes", reason=ML_DTYPES_REASON)


def sample_tensors(seed=0) -> dict:
    """One tensor of every dtype the formats share, with awkward shapes (empty, scalar) and bit patterns.

    bfloat16 (``"bf16"``) only with ml_dtypes.
    """
    rng = np.random.default_rng(seed)
    out = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "f16": rng.normal(size=7).astype(np.float16),
        "bf16": rng.normal(size=(2, 3)).astype(np.float32).astype(BF16) if BF16 is not None else None,
        "f64": np.array([np.pi, -0.0, np.inf, 1e-310]),
        "i8": np.array([-128, 0, 127], np.int8),
        "i16": np.array([-32768, 7], np.int16),
        "i32": np.array([[1, -2], [3, -4]], np.int32),
        "i64": np.array([-(2**63), 2**62], np.int64),
        "u8": np.arange(256, dtype=np.uint8),
        "u16": np.array([65535], np.uint16),
        "u32": np.array([2**32 - 1], np.uint32),
        "u64": np.array([2**64 - 1], np.uint64),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5, np.float64),
        "layer/with.dots": np.ones(2, np.float32),
    }
    out["f32"][0, 0] = np.float32(np.nan)  # raw tensors keep any bit pattern
    if BF16 is None:
        del out["bf16"]
    return out


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Equal dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def quantized_model(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    w = np.where(rng.random((32, 48)) < 0.3, rng.normal(size=(32, 48)), 0).astype(np.float32)
    return {"fc.weight": dcformat.quantize(w, bits=4), "fc.bias": rng.normal(size=32).astype(np.float32)}


# -- safetensors --------------------------------------------------------------------------


def test_safetensors_dcf_round_trip_is_bit_exact(tmp_path):
    tensors = sample_tensors()
    src = tmp_path / "in.safetensors"
    write_safetensors(tensors, src, metadata={"format": "pt", "note": "ü"})
    back, metadata = read_safetensors(src)
    assert metadata == {"format": "pt", "note": "ü"}
    for name in tensors:
        assert_same(back[name], tensors[name])
    report = convert(src, tmp_path / "m.dcf")
    assert report.tensors == len(tensors) and report.dequantized == [] and report.quantized == []
    report = convert(tmp_path / "m.dcf", tmp_path / "out.safetensors")
    out, metadata = read_safetensors(tmp_path / "out.safetensors")
    assert metadata == {"format": "pt", "note": "ü"}
    assert set(out) == set(tensors)
    for name in tensors:
        assert_same(out[name], tensors[name])
    assert (tmp_path / "out.safetensors").read_bytes() == src.read_bytes()  # a dcf round trip changes nothing


def test_safetensors_bytes_match_the_library(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {k: v for k, v in sample_tensors().items() if v.dtype != BF16}  # its numpy API has no bfloat16
    write_safetensors(tensors, tmp_path / "ours.safetensors", metadata={"format": "np"})
    assert (tmp_path / "ours.safetensors").read_bytes() == st_numpy.save(tensors, metadata={"format": "np"})
    shuffled = dict(reversed(list(tensors.items())))
    write_safetensors(shuffled, tmp_path / "again.safetensors", metadata={"b": "2", "a": "1", "c": "3"})
    write_safetensors(tensors, tmp_path / "again2.safetensors", metadata={"c": "3", "a": "1", "b": "2"})
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "again2.safetensors").read_bytes()  # no dict order shows


def test_safetensors_written_by_torch_is_read_and_ours_is_read_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    needs_bfloat16()
    st_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    state = {"w": torch.randn(4, 6, dtype=torch.bfloat16), "b": torch.randn(6, dtype=torch.float16), "n": torch.tensor(3)}
    st_torch.save_file(state, tmp_path / "t.safetensors", metadata={"k": "v"})
    convert(tmp_path / "t.safetensors", tmp_path / "t.dcf")
    with dcformat.open(tmp_path / "t.dcf") as f:
        assert f.info("w").dtype == "bfloat16" and f.metadata()["k"] == "v"
    convert(tmp_path / "t.dcf", tmp_path / "back.safetensors")
    loaded = st_torch.load_file(tmp_path / "back.safetensors")
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


def test_quantized_tensors_are_dequantized_and_named(tmp_path):
    tensors = quantized_model()
    dcformat.save_file(tensors, tmp_path / "q.dcf", metadata={"epochs": 3, "name": "lenet", "cfg": {"b": [1, 2]}})
    report = convert(tmp_path / "q.dcf", tmp_path / "q.safetensors")
    assert report.dequantized == ["fc.weight"]
    out, metadata = read_safetensors(tmp_path / "q.safetensors")
    assert_same(out["fc.weight"], tensors["fc.weight"].dequantize())
    assert_same(out["fc.bias"], tensors["fc.bias"])
    assert metadata == {"epochs": "3", "name": "lenet", "cfg": '{"b":[1,2]}'}  # non-strings as JSON; no dcformat.* keys


def test_bits_quantizes_large_float_tensors_into_the_dcf(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "big": rng.normal(size=(64, 64)).astype(np.float32),
        "small": rng.normal(size=10).astype(np.float32),
        "ints": np.arange(5000, dtype=np.int32),
    }
    write_safetensors(tensors, tmp_path / "a.safetensors")
    report = convert(tmp_path / "a.safetensors", tmp_path / "a.dcf", bits=3, min_elements=100, options=EncodeOptions(dense="raw"))
    assert report.quantized == ["big"]
    assert report.bytes_out < report.bytes_in
    with dcformat.open(tmp_path / "a.dcf") as f:
        assert f.info("big").codebook_size <= 8
        assert f.info("small").encoding == "raw" and f.info("ints").encoding == "raw"
        assert_same(f.get("small"), tensors["small"])
    with pytest.raises(EncodeError, match="bits"):
        convert(tmp_path / "a.safetensors", tmp_path / "a.npz", bits=3)
    write_safetensors({"zeros": np.zeros(500, np.float32), "nan": np.full(500, np.nan, np.float32)}, tmp_path / "b.safetensors")
    with pytest.raises(EncodeError, match="'nan'.*NaN"):
        convert(tmp_path / "b.safetensors", tmp_path / "b.dcf", bits=3, min_elements=100)
    write_safetensors({"zeros": np.zeros(500, np.float32)}, tmp_path / "b.safetensors")
    assert convert(tmp_path / "b.safetensors", tmp_path / "b.dcf", bits=3, min_elements=100).quantized == []


def safetensors_bytes(header: dict, data: bytes, *, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize(
    "case, error, match",
    [
        (safetensors_bytes({}, b"", length=10**9), LimitError, "header_length"),
        (safetensors_bytes({}, b"", length=500), FormatError, "runs past the end"),
        (b"\x05\x00", FormatError, "shorter"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4), FormatError, "data_offsets"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), FormatError, "needs 8"),
        (
            safetensors_bytes(
                {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8
            ),
            FormatError,
            "overlaps",
        ),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), FormatError, "hole"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), FormatError, "not covered"),
        (safetensors_bytes({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), UnsupportedError, "F8_E4M3"),
        (safetensors_bytes({"a": {"dtype": "BOOL", "shape": [1], "data_offsets": [0, 1]}}, b"\x02"), FormatError, "BOOL"),
        (safetensors_bytes({"__metadata__": {"k": 1}}, b""), FormatError, "__metadata__"),
        (safetensors_bytes({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b""), FormatError, "shape"),
        (b"\x04\x00\x00\x00\x00\x00\x00\x00[1] ", FormatError, "JSON object"),
        (b'\x09\x00\x00\x00\x00\x00\x00\x00{"a":1,"a":2}'[:17], FormatError, "JSON"),
    ],
    ids=[
        "huge-header",
        "header-past-end",
        "tiny",
        "offsets-past-end",
        "wrong-length",
        "overlap",
        "hole",
        "trailing",
        "float8",
        "bool-byte",
        "metadata-values",
        "negative-dim",
        "not-object",
        "bad-json",
    ],
)
def test_bad_safetensors_files(tmp_path, case, error, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(case)
    with pytest.raises(error, match=match):
        read_safetensors(path)


# -- PyTorch ------------------------------------------------------------------------------


def test_torch_files_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    needs_bfloat16()
    torch.manual_seed(0)
    state = {
        "w": torch.randn(5, 3, dtype=torch.bfloat16),
        "b": torch.randn(5),
        "steps": torch.tensor(7),
        "mask": torch.rand(4) > 0.5,
        "h": torch.randn(2, dtype=torch.float16),
        "u": torch.tensor([65535], dtype=torch.uint16),
    }
    torch.save(state, tmp_path / "m.pt")
    convert(tmp_path / "m.pt", tmp_path / "m.dcf")
    convert(tmp_path / "m.dcf", tmp_path / "back.pth")
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert set(back) == set(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor)
    # A training checkpoint: the state dict under "state_dict" (or "model"); the rest ignored.
    torch.save({"state_dict": state, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.bin")
    tensors, _ = read_torch(tmp_path / "ckpt.bin")
    assert set(tensors) == set(state) and tensors["w"].dtype == BF16
    torch.save({"model": state, "epoch": 3}, tmp_path / "ckpt2.pt")
    assert set(read_torch(tmp_path / "ckpt2.pt")[0]) == set(state)


def test_torch_modules_and_quantized_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    tensors, _ = read_torch(model)
    assert set(tensors) == set(model.state_dict())
    np.testing.assert_array_equal(tensors["0.weight"], model[0].weight.detach().numpy())
    q = quantized_model()
    assert write_torch(q, tmp_path / "q.pt") == ["fc.weight"]
    back = torch.load(tmp_path / "q.pt", weights_only=True)
    np.testing.assert_array_equal(back["fc.weight"].numpy(), q["fc.weight"].dequantize())


class NotAWeight:  # pickled below: torch.load(weights_only=True) must refuse to build it
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unsafe_or_bad_torch_files_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": NotAWeight()}))
    with pytest.raises(FormatError, match="weights-only"):
        read_torch(tmp_path / "evil.pt")
    torch.save({"w": torch.zeros(2), "note": "not a tensor"}, tmp_path / "mixed.pt")
    with pytest.raises(FormatError, match="state dict"):
        read_torch(tmp_path / "mixed.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk" * 10)
    with pytest.raises(FormatError):
        read_torch(tmp_path / "junk.pt")
    with pytest.raises(EncodeError, match="complex"):
        read_torch({"c": torch.zeros(2, dtype=torch.complex64)})


def test_import_does_not_pull_optional_packages():
    code = (
        "import sys, dcformat.interop.convert, dcformat.interop.caffe, dcformat.cli.convert; "
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'safetensors', 'tqdm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = str(REPO_ROOT)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={**os.environ, "PYTHONPATH": root})


# -- npz ----------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    tensors = {k: v for k, v in sample_tensors().items() if v.dtype != BF16}
    tensors["file"] = np.arange(3)  # would clash with np.savez's own argument
    write_npz(tensors, tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:  # numpy reads what we write
        assert_same(z["file"], tensors["file"])
    convert(tmp_path / "a.npz", tmp_path / "a.dcf")
    report = convert(tmp_path / "a.dcf", tmp_path / "b.npz")
    back, _ = read_npz(tmp_path / "b.npz")
    for name in tensors:
        assert_same(back[name], tensors[name])
    assert report.notes == []


def test_npz_stores_bfloat16_as_float32(tmp_path):
    needs_bfloat16()
    write_npz({"bf": sample_tensors()["bf16"]}, tmp_path / "bf.npz")
    assert_same(read_npz(tmp_path / "bf.npz")[0]["bf"], sample_tensors()["bf16"].astype(np.float32))


def test_bad_npz_files(tmp_path):
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(UnsupportedError, match="object"):
        read_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK junk")
    with pytest.raises(FormatError, match="zip"):
        read_npz(tmp_path / "junk.npz")
    # A member that declares a shape far bigger than its bytes: refused before numpy allocates it.
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("a.npy", member.getvalue() + b"\0" * 16)
    with pytest.raises(FormatError, match="needs 4000000000000 bytes"):
        read_npz(tmp_path / "huge.npz")


# -- ONNX ---------------------------------------------------------------------------------


def onnx_case(kind: str, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    if kind == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
        x = torch.randn(4, 20)
    else:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 6, 3),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(6 * 2 * 2, 4),
        )
        x = torch.randn(2, 3, 8, 8)
    model.eval()
    path = tmp_path / f"{kind}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    return model, x, path


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_onnx_compress_and_rebuild(tmp_path, kind):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    model, x, path = onnx_case(kind, tmp_path)
    report = convert(path, tmp_path / "m.dcf", bits=4, min_elements=64, strip_graph=tmp_path / "graph.onnx")
    weights = sorted(n for n, p in model.state_dict().items() if n.endswith("weight"))
    assert report.quantized == weights
    assert report.bytes_out < report.bytes_in
    with dcformat.open(tmp_path / "m.dcf") as f:
        assert f.metadata()["onnx.initializers"] and set(f.metadata()["onnx.initializers"]) == set(f.keys())
    assert os.path.getsize(tmp_path / "graph.onnx") < os.path.getsize(path) / 2
    rebuilt = tmp_path / "rebuilt.onnx"
    for graph in (path, tmp_path / "graph.onnx"):  # the original model or the stripped template
        report = convert(tmp_path / "m.dcf", rebuilt, graph=graph)
        assert report.dequantized == weights
        session = ort.InferenceSession(str(rebuilt), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x.numpy()})[0]
        reference = copy.deepcopy(model)
        decoded = dcformat.load_file(tmp_path / "m.dcf")
        reference.load_state_dict({k: torch.from_numpy(v) for k, v in decoded.items()})
        with torch.no_grad():
            expected = reference(x).numpy()
            original = model(x).numpy()
        diff = float(np.abs(got - expected).max())
        print(f"\nONNX {kind}: max |onnxruntime - torch with the dequantized weights| = {diff:.3g}")
        assert diff <= 1e-5
        assert np.abs(got - original).max() > 1e-4  # the weights really were replaced


def test_onnx_rebuild_checks_the_graph(tmp_path):
    model, x, path = onnx_case("mlp", tmp_path)
    convert(path, tmp_path / "m.dcf")  # exact: no bits
    tensors, metadata = read_onnx(path)
    assert metadata["onnx.initializers"] == list(tensors)
    with pytest.raises(EncodeError, match="graph"):
        convert(tmp_path / "m.dcf", tmp_path / "r.onnx")
    _, _, other = onnx_case("conv", tmp_path)
    with pytest.raises(EncodeError):
        convert(tmp_path / "m.dcf", tmp_path / "r.onnx", graph=other)
    # Exact round trip: the rebuilt initializers are the original ones, bit for bit.
    convert(tmp_path / "m.dcf", tmp_path / "r.onnx", graph=path)
    again, _ = read_onnx(tmp_path / "r.onnx")
    for name in tensors:
        assert_same(again[name], tensors[name])
    # Through safetensors and back, the metadata list is a JSON string; it still ties the weights to their graph.
    convert(tmp_path / "m.dcf", tmp_path / "m.safetensors")
    convert(tmp_path / "m.safetensors", tmp_path / "r2.onnx", graph=path)
    assert (tmp_path / "r2.onnx").read_bytes() == (tmp_path / "r.onnx").read_bytes()
    with pytest.raises(EncodeError, match="not the one"):
        convert(tmp_path / "m.safetensors", tmp_path / "r3.onnx", graph=tmp_path / "conv.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xff\xff junk")
    with pytest.raises(FormatError, match="ONNX"):
        read_onnx(tmp_path / "junk.onnx")


# -- the command -----------------------------------------------------------------------


def run_cli(argv) -> int:
    from dcformat.cli.convert import register

    parser = argparse.ArgumentParser(prog="dcformat")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_convert_command_json_and_text(tmp_path, capsys):
    dcformat.save_file(quantized_model(), tmp_path / "q.dcf")
    assert run_cli(["convert", str(tmp_path / "q.dcf"), str(tmp_path / "q.safetensors"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dequantized"] == ["fc.weight"] and report["tensors"] == 2
    assert report["source_format"] == "dcf" and report["destination_format"] == "safetensors"
    assert report["bytes_out"] == os.path.getsize(tmp_path / "q.safetensors")
    assert (
        run_cli(
            [
                "convert",
                str(tmp_path / "q.safetensors"),
                str(tmp_path / "r.dcf"),
                "--bits",
                "4",
                "--min-elements",
                "100",
                "--coder",
                "bitpack",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "q.safetensors (safetensors" in out and "r.dcf (dcf" in out and "quantized (1): fc.weight" in out
    with pytest.raises(DCFormatError, match="--graph"):
        run_cli(["convert", str(tmp_path / "q.dcf"), str(tmp_path / "q.onnx")])
    with pytest.raises(EncodeError, match="extension"):
        run_cli(["convert", str(tmp_path / "q.dcf"), str(tmp_path / "q.h5")])


def test_main_reports_errors_in_one_line(tmp_path, capsys):
    from dcformat.cli import build_parser, main

    if "convert" not in build_parser()._subparsers._group_actions[0].choices:
        pytest.skip("dcformat.cli does not register the convert command yet (commands.convert.register)")
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00")
    assert main(["convert", str(tmp_path / "bad.safetensors"), str(tmp_path / "x.dcf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcformat convert: ") and "Traceback" not in err and not (tmp_path / "x.dcf").exists()


def test_convert_checks_its_arguments_before_reading(tmp_path):
    missing = tmp_path / "missing.dcf"  # never opened: each call fails on its arguments first
    for kwargs, match in [
        (dict(dst=tmp_path / "a.onnx"), "graph"),
        (dict(dst=tmp_path / "a.net"), "prototxt"),
        (dict(dst=tmp_path / "a.npz", bits=4), "bits"),
        (dict(dst=tmp_path / "a.npz", strip_graph=tmp_path / "g.onnx"), "onnx"),
        (dict(dst=missing), "same file"),
        (dict(dst=tmp_path / "a.dcf", min_elements=-1), "min_elements"),
    ]:
        with pytest.raises(EncodeError, match=match):
            convert(missing, **kwargs)


def test_a_shard_index_is_pointed_to_its_folder(tmp_path):
    """convert takes files; a sharded model's index is told how its folder converts."""
    for name in ("model.dcf.index.json", "model.safetensors.index.json"):
        with pytest.raises(EncodeError, match=r"sharded model converts as its folder \(dcformat convert MODEL_DIR OUT_DIR\)"):
            convert(tmp_path / name, tmp_path / "out.safetensors")
    with pytest.raises(EncodeError, match=r"known: .*\.safetensors\)$"):  # no such pointer for other names
        convert(tmp_path / "model.json", tmp_path / "out.safetensors")


def test_reserved_metadata_from_other_formats_is_dropped_with_a_note(tmp_path):
    header = {"__metadata__": {"dcformat.producer": "x", "k": "v"}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    (tmp_path / "a.safetensors").write_bytes(safetensors_bytes(header, np.ones(2, "<f4").tobytes()))
    report = convert(tmp_path / "a.safetensors", tmp_path / "a.dcf")
    assert any("dcformat.producer" in note for note in report.notes)
    with dcformat.open(tmp_path / "a.dcf") as f:
        assert f.metadata()["k"] == "v" and f.metadata()["dcformat.producer"].startswith("dcformat ")


def test_failed_conversions_leave_no_file(tmp_path):
    from dcformat.interop.convert import write_dcf

    np.savez(tmp_path / "in.npz", a=np.ones(3, np.float32), bad=np.ones(2, np.complex64))
    with pytest.raises(EncodeError, match="'bad'"):
        convert(tmp_path / "in.npz", tmp_path / "out.dcf")
    with pytest.raises(EncodeError):  # fails half-way through writing: the temporary file goes too
        write_dcf({"a": np.ones(3), "b" * 2000: np.ones(2)}, tmp_path / "out.dcf")
    assert sorted(os.listdir(tmp_path)) == ["in.npz"]


def test_written_files_get_ordinary_permissions(tmp_path):
    write_npz({"a": np.ones(2)}, tmp_path / "a.npz")
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(tmp_path / "a.npz").st_mode & 0o777 == 0o666 & ~umask


def test_quantized_values_survive_every_dense_format(tmp_path):
    q = quantized_model()
    dcformat.save_file(q, tmp_path / "q.dcf")
    expected = q["fc.weight"].dequantize()
    for ext in (".npz",) + ((".pt",) if _has("torch") else ()) + (".safetensors",):
        report = convert(tmp_path / "q.dcf", tmp_path / f"q{ext}")
        assert report.dequantized == ["fc.weight"]
        back = convert(tmp_path / f"q{ext}", tmp_path / f"q{ext}.dcf")
        assert back.dequantized == [] and back.quantized == []
        assert_same(dcformat.load_file(tmp_path / f"q{ext}.dcf")["fc.weight"], expected)
    with dcformat.open(tmp_path / "q.dcf") as f:
        assert isinstance(f.get_quantized("fc.weight"), QuantizedTensor)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
