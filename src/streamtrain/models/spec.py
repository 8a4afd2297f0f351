"""Parse spec strings such as ``"StandardScaler | LogisticRegression(l2=0.01)"``.

A spec is a small expression language, parsed with :mod:`ast` and never evaluated:

* a name (``LogisticRegression``, or qualified ``linear_model.LogisticRegression``) from an
  allow-list of River classes, optionally called with literal arguments (numbers, strings,
  booleans, ``None``, lists, tuples, dicts) or with nested specs
  (``LogisticRegression(optimizer=optim.SGD(0.05))``);
* ``a | b`` builds a River pipeline from two specs, ``a + b`` a union of two transformers
  (``compose.TransformerUnion``: their features side by side), so that a flat record's columns
  can be treated apart:
  ``(Select('amount') | StandardScaler) + (Select('country') | OneHotEncoder) | LogisticRegression``
  (``+`` binds tighter than ``|``, as in Python);
* ``SelectType(...)`` takes type names from a short allow-list (:data:`TYPE_NAMES`:
  ``numbers.Number``, ``str``...), resolved by table lookup.

Anything else (attribute access outside the allow-list, subscripts, lambdas, comprehensions,
names of non-River objects) is refused with a :class:`~streamtrain.errors.ConfigError`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

from streamtrain.errors import ConfigError

__all__ = [
    "TYPE_NAMES",
    "Registry",
    "dataset_registry",
    "detector_registry",
    "estimator_registry",
    "metric_registry",
    "parse_spec",
]

# River sub-packages whose public classes a model spec may name. Only estimators and their
# building blocks: nothing here reads files, opens sockets or runs user-supplied code.
ESTIMATOR_MODULES = (
    "preprocessing",
    "linear_model",
    "tree",
    "naive_bayes",
    "neighbors",
    "forest",
    "ensemble",
    "multiclass",
    "feature_extraction",
    "feature_selection",
    "imblearn",
    "compose",
    "optim",
    "optim.losses",
    "optim.initializers",
    "optim.schedulers",
    "stats",
    "drift",
)


# The types a SelectType may name: a flat record's values are numbers or strings.
TYPE_NAMES: dict[str, type] = {
    "numbers.Number": numbers.Number,
    "numbers.Real": numbers.Real,
    "numbers.Integral": numbers.Integral,
    "int": int,
    "float": float,
    "str": str,
}


class Registry:
    """Names a spec may use, each mapped to a River class.

    A bare class name is accepted when it is unique across the registry's modules; the
    qualified ``module.Class`` form always works.
    """

    def __init__(self, kind: str, classes: Mapping[str, type]) -> None:
        self.kind = kind
        self._qualified = dict(classes)
        bare: dict[str, list[str]] = {}
        for qualified in self._qualified:
            bare.setdefault(qualified.rsplit(".", 1)[-1], []).append(qualified)
        self._bare = {name: quals for name, quals in bare.items()}

    def lookup(self, name: str) -> type:
        if name in self._qualified:
            return self._qualified[name]
        candidates = self._bare.get(name, [])
        if len(candidates) == 1:
            return self._qualified[candidates[0]]
        if len(candidates) > 1:
            raise ConfigError(
                f"{self.kind} name {name!r} is ambiguous; write one of: {', '.join(candidates)}"
            )
        raise ConfigError(f"unknown {self.kind} {name!r} (see `streamtrain list {self.kind}s`)")

    def names(self) -> list[str]:
        return sorted(self._qualified)


def _public_classes(
    package: str, module_names: Iterable[str], keep: Callable[[type], bool]
) -> dict[str, type]:
    classes: dict[str, type] = {}
    for module_name in module_names:
        module = importlib.import_module(f"{package}.{module_name}")
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and not name.startswith("_")
                and obj.__module__.startswith("river.")
                and not inspect.isabstract(obj)
                and keep(obj)
            ):
                classes[f"{module_name}.{name}"] = obj
    return classes


@cache
def estimator_registry() -> Registry:
    from river import base, optim

    def keep(cls: type) -> bool:
        return issubclass(
            cls,
            base.Estimator
            | optim.base.Optimizer
            | optim.losses.Loss
            | optim.base.Initializer
            | optim.base.Scheduler
            | base.Base,
        )

    return Registry("model", _public_classes("river", ESTIMATOR_MODULES, keep))


@cache
def metric_registry() -> Registry:
    from river import metrics

    def keep(cls: type) -> bool:
        return issubclass(cls, metrics.base.Metric) and cls.__module__ != "river.metrics.base"

    classes = _public_classes("river", ("metrics",), keep)
    # Metrics are named bare in practice ("ROCAUC"), so register them without the prefix too.
    return Registry("metric", {k.split(".", 1)[1]: v for k, v in classes.items()})


@cache
def dataset_registry() -> Registry:
    """River datasets that ship with the package (no download) and synthetic generators."""
    from river import datasets

    def keep_shipped(cls: type) -> bool:
        return issubclass(cls, datasets.base.Dataset) and not issubclass(
            cls, datasets.base.RemoteDataset
        )

    def keep_synth(cls: type) -> bool:
        return issubclass(cls, datasets.base.Dataset)

    shipped = _public_classes("river", ("datasets",), keep_shipped)
    shipped = {k.split(".", 1)[1]: v for k, v in shipped.items()}
    synth = _public_classes("river.datasets", ("synth",), keep_synth)
    return Registry("dataset", {**shipped, **synth})


@cache
def detector_registry() -> Registry:
    """River's drift detectors (``river.drift``, ``river.drift.binary``), less the two that
    only serve tests and the off switch (``DummyDriftDetector``, ``NoDrift``)."""
    from river import base

    def keep(cls: type) -> bool:
        return issubclass(cls, base.DriftDetector | base.BinaryDriftDetector) and (
            cls.__name__ not in ("DummyDriftDetector", "NoDrift")
        )

    classes = _public_classes("river", ("drift", "drift.binary"), keep)
    return Registry("detector", classes)


def parse_spec(spec: str, registry: Registry) -> Any:
    """Build the object a spec describes, using only ``registry`` classes and literals.

    >>> model = parse_spec("StandardScaler | LogisticRegression(l2=0.01)", estimator_registry())
    >>> list(model.steps), model["LogisticRegression"].l2
    (['StandardScaler', 'LogisticRegression'], 0.01)
    >>> parse_spec("F1(pos_val=False)", metric_registry())
    F1: 0.00%

    Names outside the registry are refused, not looked up:

    >>> parse_spec("os.system('reboot')", estimator_registry())
    Traceback (most recent call last):
    streamtrain.errors.ConfigError: unknown model 'os.system' (see `streamtrain list models`)
    """
    text = spec.strip()
    if not text:
        raise ConfigError(f"empty {registry.kind} spec")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"cannot parse {registry.kind} spec {spec!r}: {err.msg}") from None
    try:
        return _build(tree.body, registry, spec)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        # Raised by a River constructor given arguments it does not accept.
        raise ConfigError(f"invalid {registry.kind} spec {spec!r}: {err}") from None


def _build(node: ast.expr, registry: Registry, spec: str) -> Any:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _build(node.left, registry, spec) | _build(node.right, registry, spec)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and registry.kind == "model":
        return _union(_build(node.left, registry, spec), _build(node.right, registry, spec), spec)
    if isinstance(node, ast.Name | ast.Attribute):
        return registry.lookup(_dotted_name(node, registry, spec))()
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name | ast.Attribute):
            raise ConfigError(f"in {spec!r}: only named {registry.kind}s can be called")
        cls = registry.lookup(_dotted_name(node.func, registry, spec))
        if cls.__name__ == "SelectType" and cls.__module__.startswith("river.compose"):
            if node.keywords:
                raise ConfigError(f"in {spec!r}: SelectType takes type names only")
            return cls(*(_type_name(a, spec) for a in node.args))
        args = [_argument(a, registry, spec) for a in node.args]
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ConfigError(f"in {spec!r}: **kwargs are not allowed")
            kwargs[kw.arg] = _argument(kw.value, registry, spec)
        return cls(*args, **kwargs)
    raise ConfigError(
        f"in {spec!r}: expected a {registry.kind} name, a call, 'a | b' or 'a + b', "
        f"got {ast.unparse(node)!r}"
    )


def _union(left: Any, right: Any, spec: str) -> Any:
    from river import base

    for side in (left, right):
        if not isinstance(side, base.Transformer):
            raise ConfigError(
                f"in {spec!r}: '+' joins transformers (their features side by side); "
                f"{type(side).__name__} is not one"
            )
    return left + right


def _type_name(node: ast.expr, spec: str) -> type:
    name = ast.unparse(node)
    if not isinstance(node, ast.Name | ast.Attribute) or name not in TYPE_NAMES:
        raise ConfigError(f"in {spec!r}: SelectType takes {', '.join(TYPE_NAMES)}, not {name!r}")
    return TYPE_NAMES[name]


def _argument(node: ast.expr, registry: Registry, spec: str) -> Any:
    if isinstance(node, ast.Call | ast.BinOp) and not _is_literal(node):
        return _build(node, registry, spec)
    if isinstance(node, ast.Name) and node.id not in ("True", "False", "None"):
        return _build(node, registry, spec)
    if isinstance(node, ast.Starred):
        raise ConfigError(f"in {spec!r}: *args are not allowed")
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ConfigError(
            f"in {spec!r}: argument {ast.unparse(node)!r} is neither a literal nor a spec"
        ) from None


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _dotted_name(node: ast.expr, registry: Registry, spec: str) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ConfigError(f"in {spec!r}: {ast.unparse(node)!r} is not a {registry.kind} name")
    parts.append(node.id)
    return ".".join(reversed(parts))
