"""The command line: inspect, verify, demo, help; errors as one line, names escaped."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dcformat
from dcformat import EncodeOptions, QuantizedTensor
from dcformat.cli import main
from tests.support.strategies import parse_file

EVIL = "evil\x1b[2J\nname"


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    w = np.where(rng.random((30, 40)) < 0.2, rng.normal(size=(30, 40)), 0).astype(np.float32)
    tensors = {
        "fc.weight": dcformat.quantize(w, bits=4),
        "fc.bias": np.arange(30, dtype=np.float32),
        "dense.q": QuantizedTensor.from_codes(np.array([-1.0, 1.0], np.float32), rng.integers(0, 2, (8, 8))),
    }
    path = tmp_path / "model.dcf"
    dcformat.save_file(
        tensors,
        path,
        metadata={"run": "test"},
        overrides={"dense.q": EncodeOptions(layout="dense", coder="bitpack"), "fc.weight": EncodeOptions(layout="sparse", gap_bits=5)},
        options=EncodeOptions(dense="raw"),
    )
    return path, w


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text


def test_inspect_table(model, capsys):
    path, w = model
    assert main(["inspect", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert str(path) in lines[0] and "dcformat 1.0" in lines[0] and f"{os.path.getsize(path):,} bytes" in lines[0]
    header = lines[1].split()
    assert header[:4] == ["name", "shape", "dtype", "encoding"]
    rows = {line.split()[0]: line.split() for line in lines[3:] if line and not line.startswith(("total", "metadata"))}
    assert set(rows) == {"dense.q", "fc.bias", "fc.weight"}
    assert rows["fc.weight"][1:4] == ["30x40", "float32", "quant_sparse"]
    assert rows["fc.weight"][4] == f"{100 * np.count_nonzero(w) / w.size:.2f}%"
    assert "(b=5)" in next(line for line in lines if line.startswith("fc.weight"))
    assert rows["fc.bias"][1:4] == ["30", "float32", "raw"]
    assert rows["dense.q"][3] == "quant_dense"
    total = next(line for line in lines if line.startswith("total:"))
    elements = 1200 + 30 + 64
    assert "3 tensors" in total and f"{elements:,} elements" in total
    assert f"fp32 {4 * elements:,} bytes" in total and f"file {os.path.getsize(path):,} bytes" in total
    assert any(line.startswith("metadata:") and '"run": "test"' in line for line in lines)


def test_inspect_json(model, capsys):
    path, w = model
    assert main(["inspect", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format_version"] == "1.0"
    assert report["file_bytes"] == os.path.getsize(path)
    assert report["metadata"]["run"] == "test"
    tensors = {t["name"]: t for t in report["tensors"]}
    assert set(tensors) == {"dense.q", "fc.bias", "fc.weight"}
    entries = {e.name.decode(): e for e in parse_file(path.read_bytes()).entries}
    for name, t in tensors.items():
        for key in (
            "shape",
            "dtype",
            "encoding",
            "stored_bytes",
            "decoded_bytes",
            "density",
            "entry_count",
            "codebook_size",
            "code_bits",
            "gap_bits",
            "gap_width",
            "codes_coder",
            "gaps_coder",
            "payload_offset",
            "ratio_vs_fp32",
        ):
            assert key in t, (name, key)
        assert t["stored_bytes"] == len(entries[name].payload)
        assert t["payload_offset"] == entries[name].offset
        assert t["shape"] == list(entries[name].shape)
    fc = tensors["fc.weight"]
    assert fc["encoding"] == "quant_sparse" and fc["gap_width"] == 5
    assert fc["density"] == pytest.approx(np.count_nonzero(w) / w.size)
    assert fc["decoded_bytes"] == 4 * 1200
    assert fc["ratio_vs_fp32"] == pytest.approx(4 * 1200 / fc["stored_bytes"])
    assert tensors["fc.bias"]["code_bits"] is None and tensors["dense.q"]["gap_bits"] is None
    totals = report["totals"]
    assert totals["tensors"] == 3 and totals["elements"] == 1294
    assert totals["fp32_bytes"] == 4 * 1294
    assert totals["stored_bytes"] == sum(len(e.payload) for e in entries.values())


def test_verify_ok(model, capsys):
    path, _ = model
    assert main(["verify", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("OK: ") and "3 tensors" in out and err == ""
    assert main(["verify", "--json", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"file": str(path), "ok": True, "tensors": 3, "format_version": "1.0"}


def test_verify_threads(model, capsys, monkeypatch):
    """``--threads`` as the other commands take it; without it ``$DCFORMAT_THREADS`` counts,
    and a bad value of it is an error, not ignored."""
    path, _ = model
    assert main(["verify", "--threads", "2", "--no-progress", str(path)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    assert main(["verify", "--threads", "0", str(path)]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("DCFORMAT_THREADS", "abc")
    assert main(["verify", str(path)]) == 1
    assert "DCFORMAT_THREADS must be a positive integer" in capsys.readouterr().err


def test_verify_corrupted_payload(model, capsys):
    path, _ = model
    entry = next(e for e in parse_file(path.read_bytes()).entries if e.name == b"fc.bias")
    data = bytearray(path.read_bytes())
    data[entry.offset + 3] ^= 0x40
    path.write_bytes(bytes(data))
    assert main(["verify", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1  # one line
    assert "tensors['fc.bias'].payload_crc32" in err and "checksum" in err
    assert_no_traceback(err)


def test_verify_corrupted_header(model, capsys):
    path, _ = model
    data = bytearray(path.read_bytes())
    data[0] = ord("X")
    path.write_bytes(bytes(data))
    assert main(["verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert "header.magic" in err and err.startswith("dcformat verify:")
    assert_no_traceback(err)
    assert main(["inspect", str(path)]) == 1
    assert "header.magic" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_missing_file(tmp_path, capsys, command):
    missing = tmp_path / "nope.dcf"
    assert main([command, str(missing)]) != 0
    err = capsys.readouterr().err
    assert "No such file" in err and "nope.dcf" in err
    assert_no_traceback(err)


def test_a_folder_is_not_a_file(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("dcformat verify:")
    assert_no_traceback(err)


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_another_format_gets_a_pointer_to_compress(tmp_path, capsys, command):
    """A safetensors file given to inspect or verify: the error says what it is named as and
    what makes a .dcf of it; a damaged .dcf gets no such pointer."""
    from dcformat.interop.convert import write_safetensors

    write_safetensors({"w": np.ones(4, np.float32)}, tmp_path / "w.safetensors")
    (tmp_path / "bad.dcf").write_bytes(b"\0" * 64)
    assert main([command, str(tmp_path / "w.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "not a dcformat file" in err and "w.safetensors is named as safetensors: `dcformat compress`" in err
    assert main([command, str(tmp_path / "bad.dcf")]) == 1
    err = capsys.readouterr().err
    assert "not a dcformat file" in err and "named as" not in err
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 64)  # compress reads no pickles: convert does
    assert main([command, str(tmp_path / "pytorch_model.bin")]) == 1
    assert "is named as torch: `dcformat convert` makes a .dcf of it" in capsys.readouterr().err


def test_names_with_control_characters_are_escaped(tmp_path, capsys):
    path = tmp_path / "evil.dcf"
    dcformat.save_file({EVIL: np.arange(3, dtype=np.float32), "ok": np.ones(2), "层1": np.zeros(1)}, path, metadata={"n\x07te": "a\x1bb\r"})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "evil\\x1b[2J\\x0aname" in out
    assert "层1" in out  # printable non-ASCII stays readable
    lines = out.splitlines()
    assert len(lines) == 3 + 3 + 2  # title, header, rule, three rows, total, metadata: no line broken by the name
    # the same in errors
    entry = next(e for e in parse_file(path.read_bytes()).entries if e.name == EVIL.encode())
    data = bytearray(path.read_bytes())
    data[entry.offset] ^= 1
    path.write_bytes(bytes(data))
    assert main(["verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and err.count("\n") == 1 and "evil" in err


def test_escaped_names_in_json_stay_exact(tmp_path, capsys):
    path = tmp_path / "evil.dcf"
    dcformat.save_file({EVIL: np.arange(3, dtype=np.float32)}, path)
    assert main(["inspect", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert json.loads(out)["tensors"][0]["name"] == EVIL  # JSON escapes, and the name survives exactly


def test_control_characters_in_the_path_are_escaped(tmp_path, capsys):
    missing = tmp_path / "bad\x1bname.dcf"
    assert main(["verify", str(missing)]) != 0
    assert "\x1b" not in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    out_dir = tmp_path / "demo-out"
    assert main(["demo", "--out", str(out_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    path = out_dir / "demo.dcf"
    assert report["path"] == str(path) and path.exists()
    assert main(["verify", str(path)]) == 0
    capsys.readouterr()
    with dcformat.open(path) as f:
        keys = f.keys()
        assert "fc1.weight" in keys and f.metadata()["seed"] == 0
        assert f.info("fc1.weight").encoding.startswith("quant_")
    assert report["inspect"]["totals"]["tensors"] == len(keys)
    assert [t["name"] for t in report["inspect"]["tensors"]] == keys
    assert main(["demo", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight" in out and "written:" in out


def test_a_reader_closing_the_output_stops_it_quietly(tmp_path):
    """``dcformat inspect big.dcf | head``: once head has gone, the command stops with the
    shell's status for SIGPIPE and writes nothing to stderr (no "Broken pipe", no traceback)."""
    path = tmp_path / "many.dcf"
    dcformat.save_file({f"layer.{k}.weight": np.full(2, k, np.float32) for k in range(2000)}, path)  # ~300 KB of table
    process = subprocess.Popen([sys.executable, "-m", "dcformat", "inspect", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(str(path).encode())
    process.stdout.close()  # more than a pipe's buffer was still to come
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 141
    assert stderr == b""


@pytest.mark.parametrize("argv", [["--help"], ["inspect", "--help"], ["verify", "--help"], ["demo", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert dcformat.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["inspect"]])
def test_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err
