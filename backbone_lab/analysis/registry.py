"""Stage names -> stage objects: the built-in stages, registered ones, and ``module:object`` paths.

``AnalysisConfig.stages`` lists stage names; each is resolved here:

1. a built-in name (``BUILTIN_STAGES``; the default list ``DEFAULT_STAGES`` is today's analysis
   in its order);
2. a name registered with ``@register_stage("name")`` in an imported module;
3. ``package.module:object`` imported on demand (a user stage anywhere on ``sys.path``): the object
   is a stage instance, a stage class (instantiated without arguments), or a plain function
   ``fn(ctx) -> StageResult | dict`` (a dict becomes the stage's summary block; its ``figures``
   mapping, if any, is embedded in the report section). Its summary key is the object's ``name``
   attribute, else the function / class name.

Built-in stages are imported only when resolved, so this module imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from backbone_lab.analysis.stage import Stage, StageResult

_STAGES = "backbone_lab.analysis.stages"
BUILTIN_STAGES: dict[str, str] = {  # name -> module:object, in the default order
    "pca": f"{_STAGES}.pca:PCAStage",
    "decomposition": f"{_STAGES}.decomposition:DecompositionStage",
    "rolling": f"{_STAGES}.rolling:RollingStage",
    "phases": f"{_STAGES}.phases:PhasesStage",
    "fits": f"{_STAGES}.fits:FitsStage",
    "correlations": f"{_STAGES}.correlations:CorrelationsStage",
    "update_alignment": f"{_STAGES}.update_alignment:UpdateAlignmentStage",
    "per_block": f"{_STAGES}.per_block:PerBlockStage",
    "switching": f"{_STAGES}.switching:SwitchingStage",
    "windows": f"{_STAGES}.windows:WindowsStage",
    "reheating": f"{_STAGES}.reheating:ReheatingStage",
    "backbone_file": f"{_STAGES}.backbone_file:BackboneFileStage",
    "diagnostics": f"{_STAGES}.diagnostic_hooks:DiagnosticHooksStage",
    "training_diagnostics": f"{_STAGES}.training_diagnostics:TrainingDiagnosticsStage",
    "controls": f"{_STAGES}.controls:ControlsStage",
    "null_baseline": f"{_STAGES}.null_baseline:NullBaselineStage",
}
DEFAULT_STAGES: tuple[str, ...] = tuple(BUILTIN_STAGES)

_REGISTERED: dict[str, Any] = {}


def register_stage(name: str) -> Callable:
    """Decorator registering a stage class, instance or function under `name`."""

    def deco(obj):
        _REGISTERED[name] = obj
        return obj

    return deco


def is_known(spec: str) -> bool:
    """Whether `spec` can name a stage without importing anything (built-in, registered, or a path)."""
    return spec in BUILTIN_STAGES or spec in _REGISTERED or ":" in spec


def load_object(path: str) -> Any:
    """``package.module:attr`` -> the attribute (one-line ValueError when it cannot be imported)."""
    mod, _, attr = path.partition(":")
    if not mod or not attr:
        raise ValueError(f"{path!r} is not module:object")
    try:
        obj = importlib.import_module(mod)
    except ImportError as e:
        raise ValueError(f"{path!r} cannot be imported ({e})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{path!r}: module {mod!r} has no {attr!r}") from None
    return obj


class FunctionStage:
    """A plain function ``fn(ctx) -> StageResult | dict`` as a stage."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name
        self.requires = tuple(getattr(fn, "requires", ()))

    def run(self, ctx) -> StageResult:
        out = self.fn(ctx)
        if isinstance(out, StageResult):
            return out
        from backbone_lab.analysis.report import block_section

        return StageResult(summary=out, report=block_section(self.name, out, ctx.out_dir))


def as_stage(obj: Any, default_name: str) -> Stage:
    """A stage instance from a stage instance / class / function."""
    if isinstance(obj, type):
        obj = obj()
    if hasattr(obj, "run"):
        if not getattr(obj, "name", None):
            obj.name = default_name
        return obj
    if callable(obj):
        return FunctionStage(obj, getattr(obj, "stage_name", None) or getattr(obj, "__name__", default_name))
    raise ValueError(f"stage {default_name!r} is neither a stage (with run(ctx)) nor a function")


def resolve_stage(spec: str) -> Stage:
    """The stage object for a name of ``AnalysisConfig.stages``."""
    if spec in BUILTIN_STAGES:
        return as_stage(load_object(BUILTIN_STAGES[spec]), spec)
    if spec in _REGISTERED:
        return as_stage(_REGISTERED[spec], spec)
    if ":" in spec:
        return as_stage(load_object(spec), spec.rpartition(":")[2])
    raise ValueError(f"unknown analysis stage {spec!r}; built-in: {', '.join(BUILTIN_STAGES)}; "
                     f"registered: {sorted(_REGISTERED) or 'none'}; or give package.module:object")
