"""A batch evaluator for common linear pipelines that gives River's per-event results exactly.

:func:`fast_evaluator_for` recognises ``StandardScaler | LogisticRegression`` (binary),
``StandardScaler | LinearRegression`` and plain ``LogisticRegression`` / ``LinearRegression``
with River's default SGD optimiser (constant learning rates, zero initialiser, no L1), evaluated
with ``ROCAUC`` / ``Accuracy`` / ``LogLoss`` / ``MAE`` / ``MSE`` / ``RMSE``; anything else gets
``None`` and stays on River's own per-event path.

State ownership. The evaluator copies the model's and metrics' state into arrays at its first
:meth:`FastEvaluator.learn_many` and from then on the arrays are the truth. ``sync()`` writes them
back into the very River objects it was given (as River's per-event path would have left them)
and hands ownership back: until the next ``learn_many``, which re-reads the River objects,
callers may use them freely, including learning from them event by event.

Feature layout. River iterates an event's features in the event's own order (its dot products
sum in that order), so a batch is computed in the compiled kernel only when every event in it has
the same keys in the same order, the *layout*. A batch whose events all share a new layout (a
feature added or dropped) switches the layout; River treats missing features as absent, and so
does this evaluator, since features outside the layout are neither read nor written. A batch that
mixes layouts, or has labels or values the kernel does not take (a class label other than a
boolean or 0/1, a non-numeric feature), raises :class:`FastPathFallback` with nothing applied:
the caller then calls ``sync()`` and lets River learn that batch event by event.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from river import compose, linear_model, metrics, optim, preprocessing, stats

from streamtrain.fastpath import params as P
from streamtrain.models.problem import Problem

__all__ = ["FastEvaluator", "FastPathFallback", "fast_evaluator_for", "kernel_load_seconds"]

log = logging.getLogger(__name__)

_chain = itertools.chain.from_iterable
_float64 = np.float64


class FastPathFallback(Exception):
    """``learn_many`` could not take this batch; nothing of it was applied.

    The caller calls :meth:`FastEvaluator.sync` and learns the batch with River, event by event
    (which reproduces River's behaviour exactly, including an event on which River raises).
    """


def fast_evaluator_for(
    model: Any, metrics: Mapping[str, Any], *, wait: bool = True
) -> FastEvaluator | None:
    """A :class:`FastEvaluator` for ``model`` and ``metrics``, or ``None`` when not eligible.

    ``None`` also when numba is not installed: the caller keeps River's per-event path. The
    compiled kernel is loaded once per process (from numba's on-disk cache, or compiled into
    it), in a background thread. With ``wait=False`` this call does not wait for it, and
    ``learn_many`` raises :class:`FastPathFallback` until it is ready: a trainer starts at once
    and learns its first batches with River, which gives the same results.
    """
    plan = _plan_for(model, metrics)
    if plan is None or not _start_loading():
        return None
    if wait:
        _wait_for_kernel()
        if _kernel is None:
            return None
    return FastEvaluator(model, dict(metrics), plan, wait=wait)


_kernel: Callable[..., int] | None = None
_kernel_seconds: float | None = None
_loader: threading.Thread | None = None
_load_failed = False
_loader_lock = threading.Lock()


def _start_loading() -> bool:
    """Start loading the kernel if nobody has; False when it cannot be had (no numba)."""
    global _loader
    with _loader_lock:
        if _kernel is not None:
            return True
        if _load_failed or importlib.util.find_spec("numba") is None:
            return False
        if _loader is None:
            _loader = threading.Thread(
                target=_load_kernel, name="streamtrain-fastpath-jit", daemon=True
            )
            _loader.start()
    return True


def _load_kernel() -> None:
    global _kernel, _kernel_seconds, _load_failed
    started = time.perf_counter()
    try:
        from streamtrain.fastpath import kernel

        kernel.warm_up()
    except Exception:  # numba broken or too old: River's path it is
        log.warning("the fast path is unavailable: numba failed to compile it", exc_info=True)
        _load_failed = True
        return
    _kernel_seconds = time.perf_counter() - started
    _kernel = kernel.learn_batch


def _wait_for_kernel() -> None:
    loader = _loader
    if loader is not None and _kernel is None:
        loader.join()


def kernel_load_seconds() -> float | None:
    """How long importing numba and compiling, or loading, the kernel took in this process."""
    return _kernel_seconds


class _Plan:
    """What the eligibility check found: the steps and the metric kinds."""

    def __init__(
        self,
        scaler: Any,
        estimator: Any,
        problem: Problem,
        rocaucs: list[Any],
        accuracies: list[Any],
        means: list[tuple[int, Any]],
    ) -> None:
        self.scaler = scaler
        self.estimator = estimator
        self.problem = problem
        self.rocaucs = rocaucs
        self.accuracies = accuracies
        self.means = means


def _plan_for(model: Any, metric_map: Mapping[str, Any]) -> _Plan | None:
    scaler = None
    estimator = model
    if type(model) is compose.Pipeline:
        steps = list(model.steps.values())
        if len(steps) != 2:
            return None
        scaler, estimator = steps
        if type(scaler) is not preprocessing.StandardScaler or scaler.window_size is not None:
            return None
        if scaler.with_std not in (True, False):
            return None
    if type(estimator) is linear_model.LogisticRegression:
        task = Problem.CLASSIFICATION
        loss = estimator.loss
        if type(loss) is not optim.losses.Log:
            return None
        if not all(_is_number(w) for w in (loss.weight_pos, loss.weight_neg)):
            return None
    elif type(estimator) is linear_model.LinearRegression:
        task = Problem.REGRESSION
        if type(estimator.loss) is not optim.losses.Squared:
            return None
    else:
        return None
    optimizer = estimator.optimizer
    if type(optimizer) is not optim.SGD or not _is_constant(optimizer.lr):
        return None
    if not _is_constant(estimator.intercept_lr):
        return None
    if type(estimator.initializer) is not optim.initializers.Zeros:
        return None
    if estimator.l1 != 0 or not _is_number(estimator.l2):
        return None
    if not _is_number(estimator.clip_gradient) or not _is_number(estimator.intercept):
        return None
    if type(estimator._weights).__name__ != "VectorDict":
        return None

    rocaucs: list[Any] = []
    accuracies: list[Any] = []
    means: list[tuple[int, Any]] = []
    for metric in metric_map.values():
        kind = type(metric)
        if kind is metrics.ROCAUC and task is Problem.CLASSIFICATION:
            if type(metric.pos_val) is not bool or len(metric.cms) != len(metric.thresholds):
                return None
            if not all(type(cm) is metrics.ConfusionMatrix for cm in metric.cms):
                return None
            rocaucs.append(metric)
        elif kind is metrics.Accuracy and task is Problem.CLASSIFICATION:
            if type(metric.cm) is not metrics.ConfusionMatrix:
                return None
            accuracies.append(metric)
        elif kind is metrics.LogLoss and task is Problem.CLASSIFICATION:
            if type(metric._mean) is not stats.Mean:
                return None
            means.append((P.MEAN_LOGLOSS, metric))
        elif kind is metrics.MAE and task is Problem.REGRESSION:
            if type(metric._mean) is not stats.Mean:
                return None
            means.append((P.MEAN_MAE, metric))
        elif kind in (metrics.MSE, metrics.RMSE) and task is Problem.REGRESSION:
            if type(metric._mean) is not stats.Mean:
                return None
            means.append((P.MEAN_MSE, metric))
        else:
            return None
    # ROCAUC's confusion matrices must be its own: a shared one would be updated twice per event.
    cm_ids = [id(cm) for m in rocaucs for cm in m.cms]
    if len(set(cm_ids)) != len(cm_ids) or set(cm_ids) & {id(m.cm) for m in accuracies}:
        return None
    return _Plan(scaler, estimator, task, rocaucs, accuracies, means)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _is_constant(scheduler: Any) -> bool:
    return type(scheduler) is optim.schedulers.Constant and _is_number(scheduler.learning_rate)


class FastEvaluator:
    """Progressive validation of one eligible model, a batch per call (see the module doc)."""

    def __init__(
        self,
        model: Any,
        metrics: dict[str, Any],
        plan: _Plan,
        *,
        wait: bool = True,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.problem: Problem = plan.problem
        self._plan = plan
        self._kernel = _kernel
        self._wait = wait
        self._is_classifier = plan.problem is Problem.CLASSIFICATION
        self._layout: list[str] | None = None
        self._loaded = False
        self._can_fail = any(kind == P.MEAN_MSE for kind, _ in plan.means)
        # Statistics of this evaluator's own work (for benchmarks and logs).
        self.batches = 0
        self.fallbacks = 0
        self.events = 0
        # Thresholds of every ROCAUC, concatenated, with their metric's positive value.
        self._thresholds = np.zeros(0, dtype=_float64)
        self._positive = np.zeros(0, dtype=np.int64)
        self._rebuild_threshold_arrays()
        self._mean_kinds = np.array([kind for kind, _ in plan.means], dtype=np.int64)

    # -- public API ---------------------------------------------------------------------------

    def learn_many(self, xs: list[dict[str, Any]], ys: list[Any]) -> np.ndarray:
        """Predict, learn and score each ``(x, y)`` in order, as River's per-event path would.

        A ``None`` label marks an unlabelled event: predicted with the model as it stands
        there, not learned, not scored. Returns every event's prediction — a classifier's
        probability of ``True`` (River's ``predict_proba_one`` is ``{False: 1 - p, True: p}``),
        a regressor's value. Raises :class:`FastPathFallback` (with nothing applied) for a
        batch it cannot take.
        """
        try:
            return self._learn_many(xs, ys)
        except FastPathFallback:
            self.fallbacks += 1
            raise

    def _learn_many(self, xs: list[dict[str, Any]], ys: list[Any]) -> np.ndarray:
        n = len(xs)
        if n != len(ys):
            raise ValueError(f"{n} feature dicts but {len(ys)} labels")
        if n == 0:
            return np.zeros(0, dtype=_float64)
        kernel = self._kernel
        if kernel is None:
            if self._wait:
                _wait_for_kernel()
            kernel = self._kernel = _kernel
            if kernel is None:
                raise FastPathFallback("the compiled kernel is not loaded (yet)")
        if compose.Pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:
            raise FastPathFallback("compose.learn_during_predict() is active")
        # Labels first: the cheapest check, and the one a whole stream fails if it fails.
        y_types = set(map(type, ys))
        unlabelled = type(None) in y_types
        if unlabelled:
            y_types.discard(type(None))
        if self._is_classifier:
            if y_types - {bool} and not self._binary_ints(ys, y_types):
                raise FastPathFallback("a class label is neither a boolean nor 0/1")
        elif not y_types <= {int, float}:
            raise FastPathFallback("a regression target is not a number")
        keys = list(_chain(xs))
        layout = self._layout
        if layout is None or keys != layout * n:
            first = list(xs[0])
            if keys != first * n:
                raise FastPathFallback("the batch mixes feature layouts")
            self._switch_layout(first)
            layout = first
        elif not self._loaded:
            self._load()
        d = len(layout)
        try:
            x_arr = np.fromiter(_chain(map(dict.values, xs)), dtype=_float64, count=n * d)
        except (TypeError, ValueError, OverflowError):
            raise FastPathFallback("a feature value is not a number") from None
        try:
            if unlabelled:
                y_arr = np.fromiter(
                    (math.nan if y is None else y for y in ys), dtype=_float64, count=n
                )
            else:
                y_arr = np.fromiter(ys, dtype=_float64, count=n)
        except OverflowError:
            raise FastPathFallback("a regression target is out of range") from None
        mutable = self._mutable
        saved = [a.copy() for a in mutable] if self._can_fail else None
        preds = np.empty(n, dtype=_float64)
        failed = kernel(
            x_arr.reshape(n, d),
            y_arr,
            self._flags,
            self._params,
            self._intercept,
            self._counts,
            self._means,
            self._variances,
            self._weights,
            self._thresholds,
            self._positive,
            self._cm_counts,
            self._cm_first,
            self._acc_on,
            self._acc_counts,
            self._acc_first,
            self._mean_kinds,
            self._mean_n,
            self._mean_values,
            self._seq,
            self._scratch,
            preds,
        )
        if failed >= 0:
            assert saved is not None
            for array, before in zip(mutable, saved, strict=True):
                array[...] = before
            raise FastPathFallback(f"River raises on event {failed} of the batch")
        learned = n - (ys.count(None) if unlabelled else 0)
        self._seq += n
        self._learned += learned
        self.events += learned
        self.batches += 1
        return preds

    def _binary_ints(self, ys: list[Any], y_types: set[type]) -> bool:
        """Labels 0/1 (ints, or mixed with booleans) act exactly as False/True here.

        River's log loss maps 0 to -1 and 1 to 1, ROCAUC compares with its boolean ``pos_val``
        and LogLoss tests truthiness, so the results are the same. Accuracy's confusion matrix
        keeps the labels themselves as keys, so with it only booleans qualify.
        """
        return (
            y_types <= {bool, int}
            and not self._plan.accuracies
            and set(ys) - {None} <= {0, 1}  # True == 1 and False == 0 too
        )

    def values(self) -> dict[str, float]:
        """The current metric values (synchronises the River objects first)."""
        self.sync()
        return {name: float(metric.get()) for name, metric in self.metrics.items()}

    def sync(self) -> tuple[Any, dict[str, Any]]:
        """Write the state into the River model and metrics and return them.

        The River objects are then exactly as River's per-event path would have left them, and
        they own the state until the next :meth:`learn_many`, which reads it back.
        """
        if self._loaded:
            if self._learned:
                self._write_model()
                self._write_metrics()
            self._loaded = False
        return self.model, self.metrics

    # -- state --------------------------------------------------------------------------------

    def _switch_layout(self, layout: list[str]) -> None:
        self.sync()
        self._layout = layout
        self._load()

    def _rebuild_threshold_arrays(self) -> None:
        thresholds: list[float] = []
        positive: list[int] = []
        for metric in self._plan.rocaucs:
            thresholds.extend(float(t) for t in metric.thresholds)
            positive.extend([int(metric.pos_val)] * len(metric.thresholds))
        self._thresholds = np.array(thresholds, dtype=_float64)
        self._positive = np.array(positive, dtype=np.int64)

    def _load(self) -> None:
        """Read the River objects' state for the current layout into arrays."""
        plan = self._plan
        layout = self._layout
        assert layout is not None
        d = len(layout)
        estimator = plan.estimator
        scaler = plan.scaler
        counts = np.zeros(d, dtype=np.int64)
        means = np.zeros(d, dtype=_float64)
        variances = np.zeros(d, dtype=_float64)
        if scaler is not None:
            s_counts, s_means, s_vars = scaler.counts, scaler.means, scaler.vars
            for i, key in enumerate(layout):
                counts[i] = s_counts.get(key, 0)
                means[i] = s_means.get(key, 0.0)
                variances[i] = s_vars.get(key, 0.0)
        weights_now = estimator._weights.to_dict()
        weights = np.array([weights_now.get(key, 0.0) for key in layout], dtype=_float64)
        self._flags = np.array(
            [
                int(self._is_classifier),
                int(scaler is not None),
                int(scaler is not None and bool(scaler.with_std)),
            ],
            dtype=np.int64,
        )
        loss = estimator.loss
        params = np.zeros(P.N_PARAMS, dtype=_float64)
        params[P.P_LR] = estimator.optimizer.lr.learning_rate
        params[P.P_ILR] = estimator.intercept_lr.learning_rate
        params[P.P_L2] = estimator.l2
        params[P.P_CLIP] = estimator.clip_gradient
        if self._is_classifier:
            params[P.P_WEIGHT_POS] = loss.weight_pos
            params[P.P_WEIGHT_NEG] = loss.weight_neg
        params[P.P_HALF] = 0.5
        params[P.P_TWO] = 2.0
        self._params = params
        self._rebuild_threshold_arrays()
        t = len(self._thresholds)
        mean_stats = [metric._mean for _, metric in plan.means]
        self._intercept = np.array([float(estimator.intercept)], dtype=_float64)
        self._counts = counts
        self._means = means
        self._variances = variances
        self._weights = weights
        self._cm_counts = np.zeros((t, 2, 2), dtype=np.int64)
        self._cm_first = np.full((t, 2, 2), -1, dtype=np.int64)
        self._acc_on = int(bool(plan.accuracies))
        self._acc_counts = np.zeros((2, 2), dtype=np.int64)
        self._acc_first = np.full((2, 2), -1, dtype=np.int64)
        self._mean_n = np.array([float(m.n) for m in mean_stats], dtype=_float64)
        self._mean_values = np.array([float(m._mean) for m in mean_stats], dtype=_float64)
        # What a batch changes, saved and restored around a call that may fail.
        self._mutable = [
            self._intercept,
            self._counts,
            self._means,
            self._variances,
            self._weights,
            self._cm_counts,
            self._cm_first,
            self._acc_counts,
            self._acc_first,
            self._mean_n,
            self._mean_values,
        ]
        self._scratch = np.zeros(d, dtype=_float64)
        self._seq = 0
        self._learned = 0
        self._iterations_at_load = estimator.optimizer.n_iterations
        self._loaded = True

    def _write_model(self) -> None:
        plan = self._plan
        layout = self._layout
        assert layout is not None
        counts, means, variances, weights = (
            self._counts,
            self._means,
            self._variances,
            self._weights,
        )
        scaler = plan.scaler
        if scaler is not None:
            s_counts, s_means, s_vars = scaler.counts, scaler.means, scaler.vars
            with_std = bool(scaler.with_std)
            for i, key in enumerate(layout):
                # Same insertion order as River's transform_one (vars, then means) and learn_one.
                if with_std:
                    s_vars[key] = float(variances[i])
                s_means[key] = float(means[i])
                s_counts[key] = int(counts[i])
        estimator = plan.estimator
        w = estimator._weights
        for i, key in enumerate(layout):
            w[key] = float(weights[i])
        estimator.intercept = float(self._intercept[0])
        estimator.optimizer.n_iterations = self._iterations_at_load + self._learned
        model = self.model
        if model is not estimator and getattr(model, "_plan", False) is None:
            # River builds a pipeline's call plan (a cache) at its first predict or learn.
            model._build_plan()

    def _write_metrics(self) -> None:
        plan = self._plan
        row = 0
        for metric in plan.rocaucs:
            for cm in metric.cms:
                _apply_cells(cm, self._cm_counts[row], self._cm_first[row])
                row += 1
        for metric in plan.accuracies:
            _apply_cells(metric.cm, self._acc_counts, self._acc_first)
        for k, (_, metric) in enumerate(plan.means):
            metric._mean.n = float(self._mean_n[k])
            metric._mean._mean = float(self._mean_values[k])


def _apply_cells(cm: Any, counts: np.ndarray, first: np.ndarray) -> None:
    """Add counted updates to a River ConfusionMatrix, as River would have made them.

    ``counts[a, b]`` updates had ``y_true = bool(a)`` (a ROCAUC's ``y == pos_val``, or an
    Accuracy's label) and ``y_pred = bool(b)``. Each River update adds ``w = 1.0``, and sums of
    ones are exact, so adding a count at once gives the same floats; applying the cells in the
    order they first occurred gives River's dictionary insertion order too.
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
