"""The compiled batch kernel: River's per-event predict-then-learn, operation by operation.

One call processes a whole batch, in order, with exactly the floating-point operations River's
per-event path performs (same operands, same order), so every intermediate value is identical:

* ``preprocessing.StandardScaler`` (``window_size=None``): ``transform_one`` with the current
  statistics for the prediction; ``learn_one`` (Welford: ``m += (x - m) / n``,
  ``v += ((x - m_old) * (x - m_new) - v) / n``), then ``transform_one`` again for learning.
  ``v ** 0.5`` is computed with ``pow`` as CPython does (LLVM would turn a literal 0.5 exponent
  into ``sqrt``, which can differ in the last bit, so the exponent is passed in at run time),
  once per variance update: the next prediction divides by the same value.
* ``linear_model.LogisticRegression`` / ``LinearRegression`` with ``optim.SGD`` (constant rate):
  the raw dot product summed in the event's feature order from 0, plus the intercept;
  ``optim.losses.Log`` / ``Squared`` gradients with their branches; ``clamp`` to
  ``clip_gradient``; intercept step ``b -= intercept_lr * g``; weight step
  ``w -= (x * g + w * l2) * lr``.
* Metrics: ``ROCAUC`` (one confusion-matrix update per threshold), ``Accuracy`` (label derived
  from the probabilities as ``max(proba, key=proba.get)``), and the ``stats.Mean``-based
  ``LogLoss``, ``MAE``, ``MSE``/``RMSE`` (``n += 1.0; mean += (1.0 / n) * (v - mean)``).
  Confusion matrices are kept as counts and first-occurrence positions; the Python side adds
  them to River's objects in first-occurrence order, which reproduces River's sums (each update
  adds ``1.0``) and the insertion order of its dictionaries.

An event whose label is NaN is *unlabelled*: predicted (into ``preds``) and otherwise skipped.

The kernel returns ``-1``, or the index of the first event on which River's per-event path
would raise (``MSE``'s ``d ** 2`` overflowing a double raises ``OverflowError`` in CPython), in
which case the caller discards the batch's work and lets River process the batch.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from streamtrain.fastpath.params import (
    MEAN_LOGLOSS,
    MEAN_MAE,
    P_CLIP,
    P_HALF,
    P_ILR,
    P_L2,
    P_LR,
    P_TWO,
    P_WEIGHT_NEG,
    P_WEIGHT_POS,
)

__all__ = ["learn_batch", "warm_up"]

_LOG_CLAMP_LOW = 1e-15
_LOG_CLAMP_HIGH = 1 - 1e-15  # River writes 1 - 1e-15, the same double


@numba.njit(cache=True, nogil=True)
def _sigmoid(x: float) -> float:  # river.utils.math.sigmoid
    if x < -30.0:
        return 0.0
    if x > 30.0:
        return 1.0
    return 1.0 / (1.0 + math.exp(-x))


@numba.njit(cache=True, nogil=True)
def _log_gradient(y: float, raw: float, weight_pos: float, weight_neg: float) -> float:
    # river.optim.losses.Log.gradient for a single value; y is 1.0 (True) or 0.0 (False).
    weight = weight_pos
    yt = 1.0
    if y == 0.0:
        yt = -1.0
        weight = weight_neg
    z = raw * yt
    if z > 18.0:
        return weight * math.exp(-z) * -yt
    if z < -18.0:
        return weight * -yt
    return weight * -yt / (math.exp(z) + 1.0)


@numba.njit(cache=True, nogil=True)
def _clamp(g: float, low: float, high: float) -> float:
    # max(min(g, high), low) with Python's semantics: min keeps g unless high < g.
    m = high if high < g else g
    return low if low > m else m


@numba.njit(cache=True, nogil=True)
def learn_batch(
    xs: np.ndarray,  # (n, d) float64, features in layout order
    ys: np.ndarray,  # (n,) float64; 1.0/0.0 for a classifier's True/False; NaN: unlabelled
    flags: np.ndarray,  # int64: [is_classifier, has_scaler, with_std]
    params: np.ndarray,  # float64[N_PARAMS]
    intercept: np.ndarray,  # float64[1], updated
    counts: np.ndarray,  # int64[d], scaler counts, updated
    means: np.ndarray,  # float64[d], updated
    variances: np.ndarray,  # float64[d], updated
    weights: np.ndarray,  # float64[d], updated
    thresholds: np.ndarray,  # float64[T], every ROCAUC's thresholds, concatenated
    positive: np.ndarray,  # int64[T], the pos_val (1 True / 0 False) of each threshold's metric
    cm_counts: np.ndarray,  # int64[T, 2, 2], [y_true == pos_val][p > t], updated
    cm_first: np.ndarray,  # int64[T, 2, 2], first event (sequence number) of each cell, updated
    acc_on: int,  # any Accuracy metric
    acc_counts: np.ndarray,  # int64[2, 2], [y][predicted label], updated
    acc_first: np.ndarray,  # int64[2, 2], updated
    mean_kinds: np.ndarray,  # int64[M]
    mean_n: np.ndarray,  # float64[M], updated
    mean_values: np.ndarray,  # float64[M], updated
    seq0: int,  # sequence number of xs[0]
    scratch: np.ndarray,  # float64[d], work space
    preds: np.ndarray,  # float64[n], out: each event's prediction (probability of True)
) -> int:
    n, d = xs.shape
    is_classifier = flags[0] != 0
    has_scaler = flags[1] != 0
    with_std = flags[2] != 0
    lr = params[P_LR]
    ilr = params[P_ILR]
    l2 = params[P_L2]
    clip = params[P_CLIP]
    weight_pos = params[P_WEIGHT_POS]
    weight_neg = params[P_WEIGHT_NEG]
    half = params[P_HALF]
    two = params[P_TWO]
    n_thresholds = thresholds.shape[0]
    n_means = mean_kinds.shape[0]
    b = intercept[0]
    std = np.empty(d)
    if has_scaler and with_std:
        for i in range(d):
            std[i] = math.pow(variances[i], half)
    for e in range(n):
        x = xs[e]
        y = ys[e]

        # -- predict: transform with the current statistics, then the raw dot product.
        dot = 0.0
        for i in range(d):
            xi = x[i]
            if has_scaler:
                if with_std:
                    # v ** 0.5 of the current variance: computed when it last changed.
                    xi = (xi - means[i]) / std[i] if variances[i] != 0.0 else 0.0
                else:
                    xi = xi - means[i]
            dot += weights[i] * xi
        raw_pred = dot + b
        pred = _sigmoid(raw_pred) if is_classifier else raw_pred
        preds[e] = pred
        if math.isnan(y):
            continue  # unlabelled: predicted only, neither learned nor scored

        # -- learn: the scaler first, then transform with the new statistics.
        for i in range(d):
            xi = x[i]
            if has_scaler:
                c = counts[i] + 1
                counts[i] = c
                old_mean = means[i]
                new_mean = old_mean + (xi - old_mean) / c
                means[i] = new_mean
                if with_std:
                    v = variances[i] + ((xi - old_mean) * (xi - new_mean) - variances[i]) / c
                    variances[i] = v
                    sd = math.pow(v, half)
                    std[i] = sd
                    xi = (xi - new_mean) / sd if v != 0.0 else 0.0
                else:
                    xi = xi - new_mean
            scratch[i] = xi
        dot = 0.0
        for i in range(d):
            dot += weights[i] * scratch[i]
        raw = dot + b
        g = _log_gradient(y, raw, weight_pos, weight_neg) if is_classifier else 2.0 * (raw - y)
        g = g * 1.0  # loss_gradient *= w
        g = _clamp(g, -clip, clip)
        b = b - ilr * g
        if l2 != 0.0:
            for i in range(d):
                weights[i] = weights[i] - (scratch[i] * g + weights[i] * l2) * lr
        else:
            for i in range(d):
                weights[i] = weights[i] - (scratch[i] * g) * lr

        # -- metrics, with the prediction made before learning.
        seq = seq0 + e
        if is_classifier:
            y_true = y != 0.0
            for t in range(n_thresholds):
                a = 1 if (y_true == (positive[t] != 0)) else 0
                p_above = 1 if pred > thresholds[t] else 0
                cm_counts[t, a, p_above] += 1
                if cm_first[t, a, p_above] < 0:
                    cm_first[t, a, p_above] = seq
            if acc_on != 0:
                a = 1 if y_true else 0
                label = 1 if pred > 1.0 - pred else 0
                acc_counts[a, label] += 1
                if acc_first[a, label] < 0:
                    acc_first[a, label] = seq
        for k in range(n_means):
            kind = mean_kinds[k]
            if kind == MEAN_LOGLOSS:
                p = _clamp(pred, _LOG_CLAMP_LOW, _LOG_CLAMP_HIGH)
                value = -math.log(p) if y != 0.0 else -math.log(1 - p)
            elif kind == MEAN_MAE:
                value = abs(y - pred)
            else:
                diff = y - pred
                value = math.pow(diff, two)
                if math.isinf(value) and not math.isinf(diff):
                    intercept[0] = b
                    return e  # CPython raises OverflowError here
            nk = mean_n[k] + 1.0
            mean_n[k] = nk
            mean_values[k] = mean_values[k] + (1.0 / nk) * (value - mean_values[k])
    intercept[0] = b
    return -1


def warm_up() -> float:
    """Compile :func:`learn_batch`, or load it from numba's on-disk cache; return the seconds.

    Called once per process before the first batch, so that no batch pays for compilation.
    """
    started = time.perf_counter()
    f8, i8 = np.float64, np.int64
    learn_batch(
        np.zeros((0, 1), dtype=f8),
        np.zeros(0, dtype=f8),
        np.zeros(3, dtype=i8),
        np.zeros(8, dtype=f8),
        np.zeros(1, dtype=f8),
        np.zeros(1, dtype=i8),
        np.zeros(1, dtype=f8),
        np.zeros(1, dtype=f8),
        np.zeros(1, dtype=f8),
        np.zeros(0, dtype=f8),
        np.zeros(0, dtype=i8),
        np.zeros((0, 2, 2), dtype=i8),
        np.zeros((0, 2, 2), dtype=i8),
        0,
        np.zeros((2, 2), dtype=i8),
        np.zeros((2, 2), dtype=i8),
        np.zeros(0, dtype=i8),
        np.zeros(0, dtype=f8),
        np.zeros(0, dtype=f8),
        0,
        np.zeros(1, dtype=f8),
        np.zeros(0, dtype=f8),
    )
    return time.perf_counter() - started
