"""The users of a batch as flat numpy arrays (struct of arrays), and the constants they use."""

from __future__ import annotations

from typing import Final

import numpy as np

from pes_ml.simulate.config import CORE_EVENTS, CORE_WEIGHTS, PERIPHERAL_WEIGHTS

N_CORE: Final = len(CORE_EVENTS)
BASE_WEIGHTS: Final = np.asarray((*CORE_WEIGHTS, *PERIPHERAL_WEIGHTS), dtype=np.float32)
K: Final = BASE_WEIGHTS.size


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function: log-odds to probability."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


class UserArrays:
    """Struct of arrays for the users of a batch, grown by doubling, compacted now and then."""

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self._alloc(max(capacity, 64))

    def _alloc(self, cap: int) -> None:
        self.acc = np.zeros(cap, np.int32)  # batch-local account index
        self.uid = np.zeros(cap, np.int32)  # index into the batch's user id strings
        self.mu = np.zeros(cap)  # the user's own long-run activity log-odds
        self.e = np.zeros(cap)  # current engagement (log-odds of being active today)
        self.lam = np.zeros(cap)  # mean extra events per active day
        self.apt = np.zeros(cap, np.float32)  # aptitude for adopting core features
        self.pref = np.zeros((cap, K), np.float32)  # taste for each session event
        self.bits = np.zeros(cap, np.uint64)  # activity of the last 64 days
        self.adopted = np.zeros(cap, np.uint8)  # core features used so far (bit per feature)
        self.alive = np.zeros(cap, bool)
        self.left_day = np.full(cap, -1, np.int64)
        self.leave_day = np.zeros(cap, np.int64)  # scheduled departure from the company
        self.drift_day = np.zeros(cap, np.int64)  # scheduled change of interest

    _FIELDS: Final = ("acc", "uid", "mu", "e", "lam", "apt", "pref", "bits", "adopted", "alive",
                      "left_day", "leave_day", "drift_day")  # fmt: skip

    def _grow(self, need: int) -> None:
        cap = self.acc.size
        if need <= cap:
            return
        old = {name: getattr(self, name) for name in self._FIELDS}
        self._alloc(max(need, 2 * cap))
        for name, arr in old.items():
            getattr(self, name)[: self.n] = arr[: self.n]

    def compact(self, keep: np.ndarray) -> None:
        idx = np.flatnonzero(keep)
        for name in self._FIELDS:
            arr = getattr(self, name)
            arr[: idx.size] = arr[idx]
        self.n = idx.size

    def add(self, acc: np.ndarray, uid: np.ndarray, day: int, rng: np.random.Generator) -> None:
        k = acc.size
        if k == 0:
            return
        self._grow(self.n + k)
        sl = slice(self.n, self.n + k)
        kind = rng.random(k)
        power = kind < 0.10
        casual = kind >= 0.55
        mu = np.where(power, rng.normal(1.8, 0.4, k), np.where(casual, rng.normal(-2.0, 0.6, k),
                                                                rng.normal(-0.2, 0.5, k)))  # fmt: skip
        self.acc[sl] = acc
        self.uid[sl] = uid
        self.mu[sl] = mu
        self.e[sl] = mu - 2.0  # onboarding: new users start well below their habit
        self.lam[sl] = rng.lognormal(np.log(1.6), 0.8, k) * np.where(power, 2.0, 1.0)
        self.apt[sl] = rng.lognormal(-0.2, 0.9, k)
        self.pref[sl] = BASE_WEIGHTS * rng.lognormal(0.0, 0.8, (k, K)).astype(np.float32)
        self.bits[sl] = 0
        self.adopted[sl] = 1  # dashboard_view from the first day
        self.alive[sl] = True
        self.left_day[sl] = -1
        self.leave_day[sl] = day + rng.geometric(1 / 1100, k)  # ~28% of people leave a year
        self.drift_day[sl] = day + rng.geometric(1 / 700, k)
        self.n += k
