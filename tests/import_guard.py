"""An import guard for subprocesses: every top-level module outside an allowed set is refused.

`guarded_env(folder, allowed, refused)` writes a `sitecustomize.py` into `folder` and returns the
environment variables that load it in every Python process started with them (PYTHONPATH), the
subprocesses of those processes included. The hook sits first on `sys.meta_path`:

* a top-level import whose name is not in `allowed` raises ModuleNotFoundError, as on a machine
  without the package (and `importlib.util.find_spec` answers None for it, as there);
* any module named in `refused` (a full dotted name, e.g. `backbone_lab.compare.report`) is refused
  the same way: a planted fault for one step of a script;
* each refusal is appended to the log file (`name <- importing file`), so a test can show what
  was refused and by whom, including imports wrapped in try/except.

`allowed_top_level(...)` builds the allowed set of the GPU check: the standard library, the
distributions of benchmarks/gpu_preinstalled.txt and of the wheel lists, closed over their own
requirements (read from the installed metadata here), mapped to their import names.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

SITECUSTOMIZE = r'''
import importlib.util, json, os, sys

_cfg = json.load(open(os.environ["BL_IMPORT_GUARD"]))
_allowed, _refused, _log = set(_cfg["allowed"]), set(_cfg["refused"]), _cfg["log"]


def _refuses(name):
    if name in _refused or any(name.startswith(r + ".") for r in _refused):
        return True
    # _sysconfigdata_<abi>_<platform>: the standard library's build data, absent from stdlib_module_names
    return "." not in name and name not in _allowed and not name.startswith("_sysconfigdata_")


def _note(name):
    importer = "?"
    frame = sys._getframe(2)
    while frame is not None:
        f = frame.f_code.co_filename
        if not f.startswith("<frozen") and "importlib" not in f and f != __file__:
            importer = f
            break
        frame = frame.f_back
    with open(_log, "a") as out:
        out.write(f"{name} <- {importer}\n")


class _Guard:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if _refuses(name):
            _note(name)
            raise ModuleNotFoundError(f"import guard: No module named {name!r}", name=name)
        return None


_real_find_spec = importlib.util.find_spec


def _find_spec(name, package=None):
    try:
        return _real_find_spec(name, package)
    except ModuleNotFoundError as err:
        if str(err).startswith("import guard:"):
            return None
        raise


importlib.util.find_spec = _find_spec
sys.meta_path.insert(0, _Guard)
'''


def requirement_names(dist: str) -> list[str]:
    """Names of the distributions `dist` requires here (extras and non-matching markers left out)."""
    from packaging.requirements import Requirement

    out = []
    for text in md.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_lines(path: Path) -> list[str]:
    """Distribution names of a requirements-style list (`name==version  # comment` or `name`)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0])
    return names


def closure(dists: list[str]) -> set[str]:
    """`dists` and everything they require, transitively (normalised names)."""
    seen: set[str] = set()
    todo = [_norm(d) for d in dists]
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        try:
            todo += [_norm(r) for r in requirement_names(d)]
        except md.PackageNotFoundError:
            pass  # not installed here: its own name stands for its import name
    return seen


def import_names(dists: set[str]) -> set[str]:
    """Top-level import names the distributions provide (from their installed files)."""
    by_dist: dict[str, set[str]] = {}
    for module, owners in md.packages_distributions().items():
        for owner in owners:
            by_dist.setdefault(_norm(owner), set()).add(module)
    names = set()
    for d in dists:
        names |= by_dist.get(d, {d.replace("-", "_")})
    return names


def allowed_top_level(benchmarks: Path, extra: tuple[str, ...] = ()) -> set[str]:
    """What the GPU check may import: the standard library, backbone_lab and the benchmark
    modules, and the import names of the preinstalled + shipped distributions and their requirements."""
    dists = distribution_lines(benchmarks / "gpu_preinstalled.txt")
    dists += distribution_lines(benchmarks / "gpu_wheels.txt")
    dists += distribution_lines(benchmarks / "gpu_wheels_from_source.txt")
    own = {p.stem for p in benchmarks.glob("*.py")} | {"backbone_lab", "sitecustomize", "__main__"}
    return set(sys.stdlib_module_names) | own | import_names(closure(dists)) | set(extra)


def guarded_env(folder: Path, allowed: set[str], refused: tuple[str, ...] = (), env: dict | None = None) -> dict:
    """Write the guard into `folder`; the returned environment loads it (PYTHONPATH first)."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    config = folder / "guard.json"
    config.write_text(json.dumps({"allowed": sorted(allowed), "refused": list(refused), "log": str(folder / "refused.log")}))
    base = dict(os.environ if env is None else env)
    path = base.get("PYTHONPATH", "")
    return {**base, "BL_IMPORT_GUARD": str(config), "PYTHONPATH": f"{folder}{os.pathsep}{path}" if path else str(folder)}


def refusals(folder: Path) -> list[str]:
    log = folder / "refused.log"
    return log.read_text().splitlines() if log.exists() else []
