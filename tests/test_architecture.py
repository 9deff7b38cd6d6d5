"""The package's import structure (docs/ARCHITECTURE.md): no import cycle, and imports only go down the layers.

Every ``import`` / ``from ... import`` in tf_facetex is read with `ast`, including those inside functions (a
function-level import can hide a cycle, it cannot excuse one). Fast: no module is executed.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "tf_facetex"

# The documented layer order, lowest first (docs/ARCHITECTURE.md, "Layers"). A unit (a sub-package or a top-level
# module of tf_facetex) may import units of lower layers only; units of the same layer do not import each other.
LAYERS = (
    ("errors", "conventions"),
    ("io_utils", "paths", "geometry", "camera", "sh", "reconstruction_files", "trace_counter"),
    ("metrics", "face_model", "xla_cache", "grayscale"),
    ("rendering", "losses", "networks", "visualize"),
    ("data",),
    ("identity", "lighting_presets", "inputs"),
    ("training",),
    ("prior",),
    ("refinement",),
    ("evaluation", "export", "albedo_model"),
    ("viewer",),
    ("pipeline", "cli"),
    ("beam_batch",),
)
LAYER_OF = {unit: index for index, units in enumerate(LAYERS) for unit in units}


def _modules():
    """{dotted module name: path} of every module of the package (a package is its __init__)."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name, modules):
    """The longest prefix of ``name`` that is a module of the package, or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph():
    """{module: {imported module of tf_facetex}}: ``from a import b`` counts as importing a.b when that is a
    module, else a; relative imports resolved; the package root itself is not an edge."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                              for alias in node.names]
            else:
                continue
            for candidate in candidates:
                if candidate.split(".")[0] != "tf_facetex":
                    continue
                target = _resolve(candidate, modules)
                if target and target not in (name, "tf_facetex"):
                    targets.add(target)
        graph[name] = targets
    return graph


def unit_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def strongly_connected(graph):
    """Tarjan: the components with more than one node (the cycles)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_walker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    # The walker itself can fail: a function-level import and a relative import are both edges.
    tree = ast.parse("def f():\n    from tf_facetex.sh import shading\nfrom . import camera\n")
    kinds = sorted(type(node).__name__ for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))
    assert kinds == ["ImportFrom", "ImportFrom"]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_every_unit_has_a_documented_layer(graph):
    units = {unit_of(module) for module in graph} - {None}
    missing = sorted(units - set(LAYER_OF))
    assert not missing, f"place these in LAYERS (and docs/ARCHITECTURE.md): {missing}"
    documented = (ROOT.parent / "docs" / "ARCHITECTURE.md").read_text()
    assert all(f"`{unit}`" in documented for unit in LAYER_OF), "docs/ARCHITECTURE.md must name every unit"


def test_no_import_cycle_between_modules(graph):
    assert strongly_connected(graph) == []


def test_no_import_cycle_between_packages(graph):
    units = {}
    for module, targets in graph.items():
        for target in targets:
            if unit_of(module) and unit_of(target) and unit_of(module) != unit_of(target):
                units.setdefault(unit_of(module), set()).add(unit_of(target))
    assert strongly_connected(units) == []


def test_imports_only_go_down_the_layers(graph):
    wrong = []
    for module, targets in sorted(graph.items()):
        source = unit_of(module)
        for target in sorted(targets):
            unit = unit_of(target)
            if source is None or unit is None or unit == source:
                continue
            if LAYER_OF[unit] >= LAYER_OF[source]:
                wrong.append(f"{module} -> {target} (layer {LAYER_OF[source]} -> {LAYER_OF[unit]})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)
