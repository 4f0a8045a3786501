"""The package's import graph has no circle and no arrow back up the layers.

The graph is read from the source with `ast` (nothing is imported). An edge A -> B is:
* an import statement in A naming B — at module level **or inside a function** (a function-level
  import only defers a circle to run time, it does not remove it); imports under
  `if TYPE_CHECKING:` are not edges (they never run);
* a string in A of the form ``"backbone_lab.x.y:object"`` (also as an f-string over module-level
  string constants): A imports B by name at run time (the analysis stage registry). Plain dotted
  strings are not edges: they are format tags, `_target_` class paths compared as text, or the
  module a subprocess runs (`python -m backbone_lab.worker`), none of which imports B into A.
`from P import name` is an edge to P.name when that is a module, else to P. A module's implicit
import of its parent packages' `__init__` is not an edge.

Layers, bottom to top (`LAYERS`): a module may import its own layer and the layers below, never
one above. The torch-free analysis and comparison sit below everything that needs torch.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "backbone_lab"

# bottom to top; a module's layer is that of the longest matching prefix (`x` covers `x.*`)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "durable", "run_dir", "run_markers", "run_identity", "run_lock", "metrics_csv",
              "summary_print", "preemption", "typed_config", "saved_config", "loop_config", "wandb_credentials", "did_you_mean",
              "model_config", "objective_config")),
    ("snapshot store", ("trajectory", "trajectory.layout", "trajectory.store", "trajectory.background_writer",
                        "trajectory.sketch_writer", "series")),
    ("analysis (numpy)", ("analysis", "analyze", "series.cli")),
    ("comparison", ("compare",)),
    ("model, data, optimizers (torch)", ("model", "trunk", "cross_entropy", "objective", "optim", "data", "mfu")),
    ("diagnostics", ("diagnostics",)),
    ("training glue (Lightning)", ("distributed", "fsdp", "checkpoint_io", "init_from", "trainer", "lit_module",
                                   "callbacks", "trajectory.callback", "trajectory.snapshot_config", "loggers", "input_checks")),
    ("composition and entry points", ("config_schema", "train", "worker", "sweep", "__main__", "")),
]

MODULE_STRING = re.compile(r"^backbone_lab(\.\w+)+:[\w.]+$")


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    mods = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "text" assignments (to read f-strings such as f"{_STAGES}.pca:PCAStage")."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _joined(node: ast.JoinedStr, consts: dict[str, str]) -> str | None:
    text = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            text.append(str(part.value))
        elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) and part.value.id in consts:
            text.append(consts[part.value.id])
        else:
            return None
    return "".join(text)


def import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        consts = _string_constants(tree)

        def add(name: str) -> None:
            if name.split(".")[0] != "backbone_lab":
                return
            target = _resolve(name, mods)
            if target and target != mod:
                edges[mod].add(target)

        def visit(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    for sub in child.orelse:
                        visit(sub)
                    continue
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(alias.name)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        base = ".".join(anchor + ([base] if base else []))
                    for alias in child.names:
                        full = f"{base}.{alias.name}"
                        add(full if full in mods else base)
                elif isinstance(child, ast.Constant) and isinstance(child.value, str) and MODULE_STRING.match(child.value):
                    add(child.value.partition(":")[0])
                elif isinstance(child, ast.JoinedStr):
                    text = _joined(child, consts)
                    if text and MODULE_STRING.match(text):
                        add(text.partition(":")[0])
                        continue
                visit(child)

        visit(tree)
    return edges


def circles(mods, edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(mods):
        if v not in index:
            connect(v)
    return out


def layer_of(module: str) -> int:
    name = module.removeprefix("backbone_lab").lstrip(".")
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".") or prefix == "") and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def upward_imports(edges) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


@pytest.fixture(scope="module")
def graph():
    mods = package_modules()
    return mods, import_edges(mods)


def test_the_walk_sees_function_level_and_by_name_imports(tmp_path):
    """A planted package: a circle closed only inside a function, one closed only by a module
    path in an f-string, a TYPE_CHECKING import that is no edge, and a relative import."""
    pkg = tmp_path / "backbone_lab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from backbone_lab.train import g\n")
    (pkg / "train.py").write_text("from backbone_lab import errors\nfrom .sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import backbone_lab.train\n")
    (pkg / "sub" / "reg.py").write_text('_P = "backbone_lab.sub"\nTABLE = {"x": f"{_P}.user:Obj"}\n')
    (pkg / "sub" / "user.py").write_text("from backbone_lab.sub.reg import TABLE\n")
    mods = package_modules(pkg)
    edges = import_edges(mods)
    assert edges["backbone_lab.errors"] == {"backbone_lab.train"}
    assert edges["backbone_lab.train"] == {"backbone_lab.errors", "backbone_lab.sub.leaf"}
    assert not edges["backbone_lab.sub.leaf"]
    assert edges["backbone_lab.sub.reg"] == {"backbone_lab.sub.user"}
    assert circles(mods, edges) == [["backbone_lab.errors", "backbone_lab.train"],
                                    ["backbone_lab.sub.reg", "backbone_lab.sub.user"]]
    assert upward_imports(edges)[0].startswith("backbone_lab.errors (base) -> backbone_lab.train")


def test_every_module_has_a_layer(graph):
    mods, _ = graph
    assert all(layer_of(m) is not None for m in mods)
    assert layer_of("backbone_lab.trajectory.callback") > layer_of("backbone_lab.trajectory.store")


def test_no_import_circle(graph):
    mods, edges = graph
    assert circles(mods, edges) == []


def test_no_upward_import(graph):
    _, edges = graph
    assert upward_imports(edges) == []
