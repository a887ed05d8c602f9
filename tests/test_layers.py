"""The package's architecture, pinned: imports run one way, from the command line at the
top down to the wire constants, with no cycles (not even through imports inside
functions) and nothing below the CLI importing it. README.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dcformat"

#: Every module's layer, by the longest matching prefix; a module may import only from its
#: own layer or lower ones (and within a layer, the graph must still be acyclic).
LAYERS = [
    ("dcformat._version", 0),
    ("dcformat.errors", 0),
    ("dcformat.kernels", 0),  # which kernels run: the compiled extension or numpy
    ("dcformat._kernels", 0),  # the compiled extension (C)
    ("dcformat.parallel", 0),
    ("dcformat.progress", 0),
    ("dcformat.format.constants", 1),  # the spec's tables and byte layouts: what every layer speaks
    ("dcformat.format.structs", 1),
    ("dcformat.codecs", 2),  # spec section 7
    ("dcformat.format", 3),  # the container: rules, plans, kernels, reader, writer
    ("dcformat.quantize", 3),  # QuantizedTensor, which the format stores, and the one k-means
    ("dcformat.io", 4),  # files on disk
    ("dcformat", 5),  # the public API (package __init__): a re-export of the layers above
    ("dcformat.interop", 6),
    ("dcformat.compress", 7),
    ("dcformat.torch", 8),  # the torch adapter
    ("dcformat.hf", 8),  # Hugging Face model folders in and out (transformers imported when loading)
    ("dcformat.paper", 9),  # the paper's reproduction, an application of the library
    ("dcformat.cli", 10),
    ("dcformat.__main__", 10),
]


def layer_of(module: str) -> int:
    matches = [(len(prefix), rank) for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS (and to README.md's picture)"
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every dcformat module ``path`` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "dcformat")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "dcformat":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return {m for m in found if m != name}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
#: Compiled modules (their sources are C): they import nothing of the package.
MODULES.update({module_name(p.with_suffix(".py")): p for p in sorted(PACKAGE.rglob("*.c"))})
GRAPH = {name: imports_of(path) if path.suffix == ".py" else set() for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(target for target in GRAPH[module] if layer_of(target) > layer_of(module))
    assert not upward, f"{module} (layer {layer_of(module)}) imports from higher layers: {upward}"


def test_nothing_imports_the_cli():
    for module, targets in GRAPH.items():
        if layer_of(module) < layer_of("dcformat.cli"):
            assert not [t for t in targets if t == "dcformat.cli" or t.startswith("dcformat.cli.")], module


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_imports():
    """The graph is not empty by accident: known edges are found, lazy imports included."""
    assert "dcformat.format.encodings" in GRAPH["dcformat.format.reader"]
    assert "dcformat.codecs.streams" in GRAPH["dcformat.format.encodings"]
    assert "dcformat.paper.reproduce" in GRAPH["dcformat.cli.reproduce"]  # imported inside run()
    assert layer_of("dcformat.codecs.huffman") < layer_of("dcformat.format.reader") < layer_of("dcformat.cli.inspect")
