"""Constants shared by the kernel and its caller (apart, so that reading them needs no numba)."""

from __future__ import annotations

# Layout of the kernel's float parameter vector.
P_LR = 0
P_ILR = 1
P_L2 = 2
P_CLIP = 3
P_WEIGHT_POS = 4
P_WEIGHT_NEG = 5
P_HALF = 6  # 0.5, passed at run time so that LLVM keeps CPython's pow(v, 0.5)
P_TWO = 7  # 2.0, idem for MSE's (y - p) ** 2
N_PARAMS = 8

# Kinds of stats.Mean-based metrics.
MEAN_LOGLOSS = 0
MEAN_MAE = 1
MEAN_MSE = 2  # MSE and RMSE
