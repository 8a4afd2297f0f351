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

Failing closed. River's internals are read and written only through
:mod:`streamtrain.fastpath.river_adapter`, which checks them first. When River is not as verified,
the model is not eligible. When that only shows later, as the evaluator takes the state from River
again after a ``sync()`` (or the model no longer qualifies), it raises :class:`FastPathDisabled`
before taking anything and stays off for good: River learns the model event by event from then
on, from state the fast path has fully written back.
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

from streamtrain.fastpath import params as P
from streamtrain.fastpath.eligibility import Ineligible, Plan, eligible_plan, plan_for
from streamtrain.fastpath.fallback import FastPathDisabled, FastPathFallback, record_disabled
from streamtrain.fastpath.river_adapter import UnsupportedRiver, learning_during_predict
from streamtrain.models.problem import Problem

__all__ = ["FastEvaluator", "fast_evaluator_for", "kernel_load_seconds"]

log = logging.getLogger(__name__)

_chain = itertools.chain.from_iterable
_float64 = np.float64


def fast_evaluator_for(
    model: Any, metrics: Mapping[str, Any], *, wait: bool = True
) -> FastEvaluator | None:
    """A :class:`FastEvaluator` for ``model`` and ``metrics``, or ``None`` when not eligible.

    ``None`` also when numba is not installed, or River is not as the fast path was verified
    with (recorded in :func:`fallback.disabled_counts`): the caller keeps River's per-event path.
    The compiled kernel is loaded once per process (from numba's on-disk cache, or compiled into
    it), in a background thread. With ``wait=False`` this call does not wait for it, and
    ``learn_many`` raises :class:`FastPathFallback` until it is ready: a trainer starts at once
    and learns its first batches with River, which gives the same results.
    """
    plan = eligible_plan(model, metrics)
    if plan is None or not _start_loading():
        return None
    if wait:
        _wait_for_kernel()
        if _kernel is None:
            return None
    return FastEvaluator(model, dict(metrics), plan, wait=wait)


def load_in_background(model: Any, metrics: Mapping[str, Any]) -> bool:
    """Start loading the kernel now if ``model`` and ``metrics`` qualify (True), so that it is
    ready by the time a trainer that is still connecting learns its first batch."""
    return eligible_plan(model, metrics) is not None and _start_loading()


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


class FastEvaluator:
    """Progressive validation of one eligible model, a batch per call (see the module doc).

    Counters: ``batches`` learned here, ``events`` learned here, ``fallbacks`` (batches refused
    with :class:`FastPathFallback`, which River then learned). ``disabled_because`` is ``None``,
    or why the evaluator is off for good (every ``learn_many`` raises :class:`FastPathDisabled`).
    """

    def __init__(
        self,
        model: Any,
        metrics: dict[str, Any],
        plan: Plan,
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
        # Statistics of this evaluator's own work (for benchmarks, logs and the trainer).
        self.batches = 0
        self.fallbacks = 0
        self.events = 0
        self.disabled_because: str | None = None

    # -- public API ---------------------------------------------------------------------------

    def learn_many(
        self, xs: list[dict[str, Any]], ys: list[Any], matrix: np.ndarray | None = None
    ) -> np.ndarray:
        """Predict, learn and score each ``(x, y)`` in order, as River's per-event path would.

        ``matrix``, if given, is the caller's promise that every event has the keys of
        ``xs[0]`` in that order, and holds their values as float64, a row per event
        (:attr:`DecodedBatch.matrix <streamtrain.fastpath.decode.DecodedBatch>`): they are then
        not read again from the dicts.

        A ``None`` label marks an unlabelled event: predicted with the model as it stands
        there, not learned, not scored. Returns every event's prediction — a classifier's
        probability of ``True`` (River's ``predict_proba_one`` is ``{False: 1 - p, True: p}``),
        a regressor's value. Raises :class:`FastPathFallback` (with nothing applied) for a
        batch it cannot take, :class:`FastPathDisabled` (a subclass, nothing applied either)
        once the fast path is off for good for this model.
        """
        try:
            if self.disabled_because is not None:
                raise FastPathDisabled(self.disabled_because)
            return self._learn_many(xs, ys, matrix)
        except FastPathFallback:
            self.fallbacks += 1
            raise

    def _learn_many(
        self, xs: list[dict[str, Any]], ys: list[Any], matrix: np.ndarray | None
    ) -> np.ndarray:
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
        try:
            during_predict = learning_during_predict()
        except UnsupportedRiver as exc:
            raise self._disable(str(exc)) from exc
        if during_predict:
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
        layout = self._layout
        if matrix is not None:  # one layout, xs[0]'s, known to the caller
            first = list(xs[0])
            if matrix.shape != (n, len(first)):
                raise ValueError(f"a {matrix.shape} matrix for {n} events of {len(first)}")
            if first != layout:
                self._switch_layout(first)
                layout = first
            elif not self._loaded:
                self._load()
        else:
            keys = list(_chain(xs))
            if layout is None or keys != layout * n:
                first = list(xs[0])
                if keys != first * n:
                    raise FastPathFallback("the batch mixes feature layouts")
                self._switch_layout(first)
                layout = first
            elif not self._loaded:
                self._load()
        d = len(layout)
        if matrix is not None:
            x_arr = matrix
        else:
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
        state = self._state
        failed = kernel(
            x_arr.reshape(n, d),
            y_arr,
            self._flags,
            self._params,
            state.intercept,
            state.counts,
            state.means,
            state.variances,
            state.weights,
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
        self._predicted += n - learned
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
            and not self._plan.has_accuracy
            and set(ys) - {None} <= {0, 1}  # True == 1 and False == 0 too
        )

    def values(self) -> dict[str, float]:
        """The current metric values (synchronises the River objects first)."""
        self.sync()
        return {name: float(metric.get()) for name, metric in self.metrics.items()}

    def sync(self) -> tuple[Any, dict[str, Any]]:
        """Write the state into the River model and metrics and return them.

        The River objects are then exactly as River's per-event path would have left them, and
        they own the state until the next :meth:`learn_many`, which reads it back. The writes go
        only to attributes the adapter checked when it read the state, so this raises only on a
        bug; the evaluator is then disabled, since the River objects may be partly written.
        """
        if self._loaded:
            self._loaded = False  # first: a failed write is not to be repeated
            if self._learned or self._predicted:
                try:
                    self._write()
                except Exception as exc:
                    self._disable(f"writing the state into River failed: {_describe(exc)}", exc)
                    raise
        return self.model, self.metrics

    # -- state --------------------------------------------------------------------------------

    def _disable(self, reason: str, exc: BaseException | None = None) -> FastPathDisabled:
        """Turn the fast path off for good for this model; the exception to raise."""
        if self.disabled_because is None:
            self.disabled_because = reason
            record_disabled(reason, exc_info=exc)
        return FastPathDisabled(reason)

    def _switch_layout(self, layout: list[str]) -> None:
        self.sync()
        self._layout = layout
        self._load()

    def _load(self) -> None:
        """Take the state from the River objects for the current layout, into arrays.

        The model and metrics are checked again (they are the caller's between a ``sync()`` and
        this): if they no longer qualify, or River's objects are not as the adapter expects,
        nothing is taken and the fast path is off for good (:class:`FastPathDisabled`).
        """
        layout = self._layout
        assert layout is not None
        try:
            plan = plan_for(self.model, self.metrics)
            if plan.problem is not self.problem:
                raise Ineligible("the model's problem changed")
            state = plan.model.read(layout)
            mean_n, mean_values = plan.metrics.read_means()
        except Ineligible as exc:
            raise self._disable(f"the model no longer qualifies: {exc}") from exc
        except UnsupportedRiver as exc:
            raise self._disable(str(exc)) from exc
        except Exception as exc:  # River's objects hold values the adapter cannot read
            raise self._disable(f"reading River's state failed: {_describe(exc)}", exc) from exc
        self._plan = plan
        self._flags = np.array(
            [int(self._is_classifier), int(plan.scaled), int(plan.with_std)], dtype=np.int64
        )
        params = np.zeros(P.N_PARAMS, dtype=_float64)
        params[P.P_LR] = plan.lr
        params[P.P_ILR] = plan.intercept_lr
        params[P.P_L2] = plan.l2
        params[P.P_CLIP] = plan.clip_gradient
        params[P.P_WEIGHT_POS] = plan.weight_pos
        params[P.P_WEIGHT_NEG] = plan.weight_neg
        params[P.P_HALF] = 0.5
        params[P.P_TWO] = 2.0
        self._params = params
        self._thresholds = plan.metrics.thresholds
        self._positive = plan.metrics.positive
        t = len(self._thresholds)
        self._state = state
        self._cm_counts = np.zeros((t, 2, 2), dtype=np.int64)
        self._cm_first = np.full((t, 2, 2), -1, dtype=np.int64)
        self._acc_on = int(plan.has_accuracy)
        self._acc_counts = np.zeros((2, 2), dtype=np.int64)
        self._acc_first = np.full((2, 2), -1, dtype=np.int64)
        self._mean_kinds = np.array(plan.mean_kinds, dtype=np.int64)
        self._can_fail = P.MEAN_MSE in plan.mean_kinds  # MSE's square can overflow
        self._mean_n = mean_n
        self._mean_values = mean_values
        # What a batch changes, saved and restored around a call that may fail.
        self._mutable = [
            state.intercept,
            state.counts,
            state.means,
            state.variances,
            state.weights,
            self._cm_counts,
            self._cm_first,
            self._acc_counts,
            self._acc_first,
            self._mean_n,
            self._mean_values,
        ]
        self._scratch = np.zeros(len(layout), dtype=_float64)
        self._seq = 0
        self._learned = 0
        self._predicted = 0  # unlabelled events answered since the load
        self._iterations_at_load = state.n_iterations
        self._loaded = True

    def _write(self) -> None:
        layout = self._layout
        assert layout is not None
        if not self._learned:  # predictions only: nothing learned, but River leaves a trace
            self._plan.model.touch_as_predicting(layout)
            return
        state = self._state
        state.n_iterations = self._iterations_at_load + self._learned
        plan = self._plan
        plan.model.write(layout, state)
        plan.metrics.write(
            self._cm_counts,
            self._cm_first,
            self._acc_counts,
            self._acc_first,
            self._mean_n,
            self._mean_values,
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
