"""The one place that knows how River keeps the state the fast path computes.

River keeps the state of the supported models and metrics in attributes that are not its public
API (``StandardScaler.counts``, ``GLM._weights``, ``Mean._mean``, the cells of a
``ConfusionMatrix``, ``Pipeline._plan``, ...), which any River release may rename or change.
Every read and write of them goes through this module: a binding checks, when it is made, that
each attribute it will touch exists as an instance attribute with the type it expects, then reads
the state into plain arrays and writes it back. A difference raises :class:`UnsupportedRiver`,
before any state has been taken from River, and the caller falls back to River's per-event path.

The checks are of layout only. What the attributes *mean* (River's update formulas, the order of
its dictionaries) was verified for the River releases in :data:`VERIFIED_RIVER`, the range
``pyproject.toml`` allows, by ``tests/unit/test_river_adapter.py``, which fails on a River whose
internals differ; a River outside that range is refused at run time too.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import river
from river import compose, metrics, stats

Version = tuple[int, int, int]

__all__ = [
    "VERIFIED_RIVER",
    "MetricsBinding",
    "ModelBinding",
    "ModelState",
    "UnsupportedRiver",
    "check_river_version",
    "learning_during_predict",
    "verified_range",
]

# The River releases this module was verified with: from the first up to, not including, the
# second. The same range bounds River in pyproject.toml (a unit test keeps the two in step).
VERIFIED_RIVER: tuple[Version, Version] = ((0, 24, 2), (0, 27, 0))

_float64 = np.float64


class UnsupportedRiver(Exception):
    """River, or one of its objects, is not as this adapter was verified with."""


def verified_range() -> str:
    """:data:`VERIFIED_RIVER` as a requirement specifier, as in pyproject.toml."""
    low, high = (".".join(map(str, v[:2] if v[2] == 0 else v)) for v in VERIFIED_RIVER)
    return f">={low},<{high}"


def check_river_version(version: str | None = None) -> None:
    """Raise :class:`UnsupportedRiver` unless ``version`` (the installed River's by default) is
    within :data:`VERIFIED_RIVER`."""
    version = str(river.__version__ if version is None else version)
    if not _verified(version):
        raise UnsupportedRiver(
            f"River {version} is outside the releases the fast path was verified with "
            f"({verified_range()})"
        )


@functools.cache
def _verified(version: str) -> bool:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        return False
    release = (int(match[1]), int(match[2]), int(match[3] or 0))
    low, high = VERIFIED_RIVER
    return low <= release < high


def learning_during_predict() -> bool:
    """Whether ``compose.learn_during_predict()`` is active (pipelines then learn in predict)."""
    flag = getattr(compose.Pipeline, "_LEARN_UNSUPERVISED_DURING_PREDICT", None)
    if type(flag) is not bool:
        raise UnsupportedRiver("compose.Pipeline._LEARN_UNSUPERVISED_DURING_PREDICT is not a bool")
    return flag


# -- the model ----------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelState:
    """A model's state over a feature layout, as plain arrays (index ``i`` is ``layout[i]``).

    A feature the model has not seen reads as River's defaults: count 0, mean, variance and
    weight 0.0.
    """

    counts: np.ndarray  # int64, the scaler's per-feature counts (zeros without a scaler)
    means: np.ndarray  # float64
    variances: np.ndarray  # float64
    weights: np.ndarray  # float64
    intercept: np.ndarray  # float64, one value: an array so that the kernel updates it in place
    n_iterations: int  # the optimiser's step count


class ModelBinding:
    """``[StandardScaler |] LogisticRegression`` or ``LinearRegression``, checked and bound.

    ``pipeline`` is the model when it is a ``compose.Pipeline``; ``scaler`` its scaler step (a
    ``StandardScaler`` without window) or ``None``; ``estimator`` the linear model.
    """

    def __init__(self, pipeline: Any, scaler: Any, estimator: Any, *, with_std: bool) -> None:
        self._with_std = with_std
        # The scaler's counts, means and variances, keyed by feature.
        self._scaler_dicts: tuple[dict[Any, int], dict[Any, float], dict[Any, float]] | None = None
        if scaler is not None:
            self._scaler_dicts = (
                _field(scaler, "counts", Counter),
                _float_dict(scaler, "means"),
                _float_dict(scaler, "vars"),
            )
        weights = _field(estimator, "_weights")
        # River's VectorDict (Cython before 0.25, Rust since): read whole, written per key.
        if type(weights).__name__ != "VectorDict" or not all(
            callable(getattr(weights, method, None)) for method in ("to_dict", "__setitem__")
        ):
            raise UnsupportedRiver(f"{_name(estimator)}._weights is not a VectorDict")
        self._weights = weights
        self._estimator = estimator
        _field(estimator, "intercept", int, float)
        self._optimizer = estimator.optimizer
        _field(self._optimizer, "n_iterations", int)
        # A pipeline caches its call plan at its first predict or learn (River >= 0.25); sync()
        # builds it too, so that the objects are byte for byte as River's per-event path leaves
        # them. Without the cache there is nothing to build.
        self._pipeline = None
        if pipeline is not None and "_plan" in _fields(pipeline):
            if not callable(getattr(pipeline, "_build_plan", None)):
                raise UnsupportedRiver("compose.Pipeline._build_plan is missing")
            self._pipeline = pipeline

    def read(self, layout: Sequence[str]) -> ModelState:
        """The model's state over ``layout``."""
        d = len(layout)
        counts = np.zeros(d, dtype=np.int64)
        means = np.zeros(d, dtype=_float64)
        variances = np.zeros(d, dtype=_float64)
        if self._scaler_dicts is not None:
            s_counts, s_means, s_vars = self._scaler_dicts
            # .get: reading must not insert the defaults River inserts on access.
            for i, key in enumerate(layout):
                counts[i] = s_counts.get(key, 0)
                means[i] = s_means.get(key, 0.0)
                variances[i] = s_vars.get(key, 0.0)
        weights_now = self._weights.to_dict()
        weights = np.array([weights_now.get(key, 0.0) for key in layout], dtype=_float64)
        return ModelState(
            counts=counts,
            means=means,
            variances=variances,
            weights=weights,
            intercept=np.array([float(self._estimator.intercept)], dtype=_float64),
            n_iterations=int(self._optimizer.n_iterations),
        )

    def touch_as_predicting(self, layout: Sequence[str]) -> None:
        """Leave the trace River's predictions leave: ``StandardScaler.transform_one`` reads
        ``vars[feature]`` of a defaultdict, which inserts 0.0 for a feature never learned."""
        if self._scaler_dicts is not None and self._with_std:
            s_vars = self._scaler_dicts[2]
            for key in layout:
                s_vars.setdefault(key, 0.0)

    def write(self, layout: Sequence[str], state: ModelState) -> None:
        """Store ``state`` into the River objects (features outside ``layout`` are left alone)."""
        if self._scaler_dicts is not None:
            s_counts, s_means, s_vars = self._scaler_dicts
            with_std = self._with_std
            for i, key in enumerate(layout):
                # Insertion order as River's transform_one (vars, then means) and learn_one.
                if with_std:
                    s_vars[key] = float(state.variances[i])
                s_means[key] = float(state.means[i])
                s_counts[key] = int(state.counts[i])
        w = self._weights
        for i, key in enumerate(layout):
            w[key] = float(state.weights[i])
        self._estimator.intercept = float(state.intercept[0])
        self._optimizer.n_iterations = state.n_iterations
        pipeline = self._pipeline
        if pipeline is not None and pipeline._plan is None:
            pipeline._build_plan()


# -- the metrics --------------------------------------------------------------------------------


class MetricsBinding:
    """The state of the ``ROCAUC``, ``Accuracy`` and ``stats.Mean``-based metrics of a model.

    ``thresholds`` and ``positive`` list every ROCAUC's thresholds, concatenated in order, with
    its ``pos_val`` as 0/1; the kernel keeps one confusion-matrix row per threshold.
    """

    def __init__(
        self, rocaucs: Sequence[Any], accuracies: Sequence[Any], means: Sequence[Any]
    ) -> None:
        thresholds: list[float] = []
        positive: list[int] = []
        self._roc_cms: list[Any] = []
        for metric in rocaucs:
            metric_thresholds = _field(metric, "thresholds", list)
            cms = _field(metric, "cms", list)
            if len(cms) != len(metric_thresholds):
                raise UnsupportedRiver("ROCAUC.cms and ROCAUC.thresholds differ in length")
            if not all(type(t) in (int, float) for t in metric_thresholds):
                raise UnsupportedRiver("a ROCAUC threshold is not a number")
            thresholds.extend(float(t) for t in metric_thresholds)
            positive.extend([int(metric.pos_val)] * len(metric_thresholds))
            self._roc_cms.extend(_confusion_matrix(cm) for cm in cms)
        self._acc_cms = [_confusion_matrix(metric.cm) for metric in accuracies]
        self._means = [_mean_stat(_field(metric, "_mean", stats.Mean)) for metric in means]
        self.thresholds = np.array(thresholds, dtype=_float64)
        self.positive = np.array(positive, dtype=np.int64)

    def shares_matrices(self) -> bool:
        """Whether a ROCAUC's confusion matrix is not its own (another metric updates it too)."""
        roc_ids = [id(cm) for cm in self._roc_cms]
        acc_ids = {id(cm) for cm in self._acc_cms}
        return len(set(roc_ids)) != len(roc_ids) or bool(set(roc_ids) & acc_ids)

    def read_means(self) -> tuple[np.ndarray, np.ndarray]:
        """Each mean-based metric's ``stats.Mean``: its count and its mean."""
        n = np.array([float(m.n) for m in self._means], dtype=_float64)
        values = np.array([float(m._mean) for m in self._means], dtype=_float64)
        return n, values

    def write(
        self,
        cm_counts: np.ndarray,
        cm_first: np.ndarray,
        acc_counts: np.ndarray,
        acc_first: np.ndarray,
        mean_n: np.ndarray,
        mean_values: np.ndarray,
    ) -> None:
        """Add counted confusion-matrix updates and store the means (see :func:`_add_cells`).

        ``cm_counts[row]`` / ``cm_first[row]`` are the updates of the ROCAUCs' matrices, a row per
        threshold; ``acc_counts`` / ``acc_first`` those of every Accuracy's matrix (each Accuracy
        saw the same updates).
        """
        for row, cm in enumerate(self._roc_cms):
            _add_cells(cm, cm_counts[row], cm_first[row])
        for cm in self._acc_cms:
            _add_cells(cm, acc_counts, acc_first)
        for k, mean in enumerate(self._means):
            mean.n = float(mean_n[k])
            mean._mean = float(mean_values[k])


def _confusion_matrix(cm: Any) -> Any:
    """``cm``, checked to be River's ConfusionMatrix with the cells :func:`_add_cells` updates."""
    if type(cm) is not metrics.ConfusionMatrix:
        raise UnsupportedRiver(f"a confusion matrix is a {type(cm).__name__}")
    _field(cm, "n_samples", int)
    _field(cm, "total_weight", int, float)
    _field(cm, "_total_true_positives", int, float)
    _float_dict(cm, "sum_row")
    _float_dict(cm, "sum_col")
    data = _field(cm, "data", defaultdict)
    rows = [*data.values(), data.default_factory() if data.default_factory else None]
    if not all(type(row) is defaultdict and row.default_factory is float for row in rows):
        raise UnsupportedRiver("ConfusionMatrix.data does not hold defaultdict(float) rows")
    return cm


def _add_cells(cm: Any, counts: np.ndarray, first: np.ndarray) -> None:
    """Add counted updates to a River ConfusionMatrix, as River would have made them.

    ``counts[a, b]`` updates had ``y_true = bool(a)`` (a ROCAUC's ``y == pos_val``, or an
    Accuracy's label) and ``y_pred = bool(b)``. Each River update adds ``w = 1.0``, and sums of
    ones are exact, so adding a count at once gives the same floats; applying the cells in the
    order they first occurred (``first[a, b]``) gives River's dictionary insertion order too.
    """
    cells = sorted(
        (int(first[a, b]), a, b, int(counts[a, b]))
        for a in (0, 1)
        for b in (0, 1)
        if counts[a, b] > 0
    )
    for _, a, b, k in cells:
        y_true = bool(a)
        y_pred = bool(b)
        fk = float(k)
        cm.n_samples += k
        cm.data[y_true][y_pred] += fk
        cm.total_weight += fk
        cm.sum_row[y_true] += fk
        cm.sum_col[y_pred] += fk
        if y_true == y_pred:
            cm._total_true_positives += fk


def _mean_stat(mean: Any) -> Any:
    _field(mean, "n", int, float)
    _field(mean, "_mean", int, float)
    return mean


# -- checks ---------------------------------------------------------------------------------------


def _fields(obj: Any) -> dict[str, Any]:
    try:
        return vars(obj)
    except TypeError:
        raise UnsupportedRiver(f"{_name(obj)} has no instance attributes") from None


def _field(obj: Any, name: str, *types: type) -> Any:
    """``obj``'s instance attribute ``name``, of one of ``types`` (any when none are given).

    An instance attribute, not a property or class attribute: writing it back then only stores
    a value, as River's own code does.
    """
    fields = _fields(obj)
    if name not in fields:
        raise UnsupportedRiver(f"{_name(obj)}.{name} is missing")
    value = fields[name]
    if types and type(value) not in types:
        expected = " or ".join(t.__name__ for t in types)
        raise UnsupportedRiver(
            f"{_name(obj)}.{name} is a {type(value).__name__}, expected {expected}"
        )
    return value


def _float_dict(obj: Any, name: str) -> defaultdict[Any, Any]:
    value = _field(obj, name, defaultdict)
    if value.default_factory is not float:
        raise UnsupportedRiver(f"{_name(obj)}.{name} is not a defaultdict(float)")
    return value


def _name(obj: Any) -> str:
    return type(obj).__name__
