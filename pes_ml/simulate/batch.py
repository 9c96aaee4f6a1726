"""Simulate one batch of accounts day by day, vectorised over all of their users.

The state of every user of the batch lives in flat numpy arrays (:class:`~pes_ml.simulate.users.UserArrays`);
each simulated day is a fixed number of array operations over those arrays, plus
one block of per-event arrays for the day's events. Python loops run per day and
per rare shock (a champion leaving), never per user or per event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from pes_ml.simulate.accounts import AccountDraws
from pes_ml.simulate.calendar import add_months, day_effects
from pes_ml.simulate.config import (
    CORE_ADOPTION_RATES,
    EXPORT_CODE,
    LOGIN_CODE,
    NPS_CODE,
    PLANS,
    TRIAL_DAYS,
    TRIAL_PLAN,
    SimulationConfig,
)
from pes_ml.simulate.users import N_CORE, K, UserArrays, sigmoid
from pes_ml.simulate.writer import EventWriter

logger = logging.getLogger(__name__)

_US_PER_DAY: Final = 86_400_000_000
_N_CORE: Final = N_CORE
_K: Final = K
_ADOPT_RATES: Final = np.asarray(CORE_ADOPTION_RATES[1:], dtype=np.float32)
_ADOPT_BITS: Final = (np.uint8(1) << np.arange(1, _N_CORE, dtype=np.uint8)).astype(np.uint8)
_CORE_BIT_SHIFTS: Final = np.arange(_N_CORE, dtype=np.uint8)
# Bit i of a user's activity history is "active i+1 days before today".
_M14: Final = np.uint64((1 << 14) - 1)
_M28: Final = np.uint64((1 << 28) - 1)
_M_PREV28: Final = np.uint64(((1 << 56) - 1) ^ ((1 << 28) - 1))
_ONE: Final = np.uint64(1)
_TOP_PLAN: Final = len(PLANS) - 1
_NEVER: Final = np.iinfo(np.int64).max

# Statuses of an account.
_PENDING, _TRIAL, _PAYING, _ENDED = 0, 1, 2, 3


@dataclass
class BatchResult:
    """What a batch hands back: subscription rows, per-account outcomes and counts."""

    rows: dict[str, np.ndarray]
    converted: np.ndarray  # bool per account: trial converted to paying
    churned: np.ndarray  # bool per account: a paying account ended
    expansions: np.ndarray  # int per account: seat or plan increases
    contractions: np.ndarray  # int per account
    n_users: int = 0
    stats: dict[str, float] = field(default_factory=dict)


class BatchSimulator:
    """Simulate accounts ``draws`` (global indices from ``first``) from signup to ``days``."""

    def __init__(
        self,
        config: SimulationConfig,
        draws: AccountDraws,
        first: int,
        rng: np.random.Generator,
        writer: EventWriter,
    ) -> None:
        self.cfg = config
        self.draws = draws
        self.rng = rng
        self.writer = writer
        self.base = np.datetime64(config.start, "D")
        self.start_us = int(self.base.astype("datetime64[us]").view(np.int64))
        self.effects = day_effects(self.base, config.days)
        m = len(draws)
        self.m = m
        self.account_ids = [f"acc_{first + i:06d}" for i in range(m)]
        self.user_ids: list[str] = []
        self.users_ever = np.zeros(m, np.int64)
        self.users = UserArrays(int(draws.seats.sum() // 2) + 64)
        # account state
        self.act_day = draws.created_day + 1  # subscription starts the day after signup
        self.status = np.zeros(m, np.int8)
        self.seats = draws.seats.copy()
        self.plan = np.zeros(m, np.int8)
        self.annual = np.zeros(m, bool)
        self.discount = np.zeros(m)
        self.auto_renew = np.zeros(m, bool)
        self.row_start = np.zeros(m, np.int64)
        self.anchor = np.zeros(m, np.int64)
        self.check_k = np.zeros(m, np.int64)
        self.next_check = np.full(m, _NEVER, np.int64)
        self.trial_end = np.full(m, _NEVER, np.int64)
        self.next_bankrupt = np.full(m, _NEVER, np.int64)
        self.next_champion = np.full(m, _NEVER, np.int64)
        self.next_team = np.full(m, _NEVER, np.int64)
        self.renewals = np.zeros(m, np.int64)
        self.notice = np.zeros(m, bool)  # cancelled: ends at the next check
        self.h = draws.health.copy()  # account health, mean-reverting around draws.health
        self.s = np.zeros(m)  # shocks (champion left, new team), decaying
        self.target = np.zeros(m)  # how many people want to use the product
        self.converted = np.zeros(m, bool)
        self.churned = np.zeros(m, bool)
        self.expansions = np.zeros(m, np.int64)
        self.contractions = np.zeros(m, np.int64)
        self._rows: list[tuple[np.ndarray, ...]] = []

    # --- subscriptions -----------------------------------------------------------------------
    def _close_rows(self, idx: np.ndarray, day: int | np.ndarray) -> None:
        end = np.broadcast_to(np.asarray(day, np.int64), idx.shape).copy()
        self._rows.append((idx.copy(), self.row_start[idx], end, self.plan[idx], self.seats[idx],
                           self.annual[idx], self.discount[idx], self.auto_renew[idx]))  # fmt: skip

    def _open_rows(self, idx: np.ndarray, day: int) -> None:
        self.row_start[idx] = day
        self.anchor[idx] = day
        self.check_k[idx] = 1
        self.next_check[idx] = add_months(self.base, np.full(idx.size, day), np.ones(idx.size, np.int64))

    def _start_paying(self, idx: np.ndarray, day: int) -> None:
        d = self.draws
        self.status[idx] = _PAYING
        self.plan[idx] = d.paid_plan[idx]
        self.annual[idx] = d.annual[idx]
        self.discount[idx] = d.discount[idx]
        self.auto_renew[idx] = d.auto_renew[idx]
        self.trial_end[idx] = _NEVER
        # Businesses rarely vanish mid-contract; when they do it is unexplainable by usage.
        self.next_bankrupt[idx] = np.where(
            self.annual[idx], day + self.rng.geometric(1 / 12000, idx.size), _NEVER
        )
        self._open_rows(idx, day)

    def _end(self, idx: np.ndarray, day: int) -> None:
        self._close_rows(idx, day)
        self.status[idx] = _ENDED
        for arr in (self.next_check, self.trial_end, self.next_bankrupt, self.next_champion, self.next_team):
            arr[idx] = _NEVER
        u = self.users
        gone = u.alive[: u.n] & np.isin(u.acc[: u.n], idx)
        u.alive[: u.n][gone] = False
        u.left_day[: u.n][gone] = day

    # --- users -------------------------------------------------------------------------------
    def _add_users(self, acc: np.ndarray, day: int) -> None:
        if acc.size == 0:
            return
        acc = np.sort(acc)
        uid = np.arange(len(self.user_ids), len(self.user_ids) + acc.size, dtype=np.int32)
        # number within the account: users_ever + rank among this day's joiners of the account
        first_of = np.searchsorted(acc, acc, side="left")
        num = self.users_ever[acc] + (np.arange(acc.size) - first_of)
        np.add.at(self.users_ever, acc, 1)
        self.user_ids.extend(
            f"u_{self.account_ids[a][4:]}_{k:03d}" for a, k in zip(acc.tolist(), num.tolist(), strict=True)
        )
        self.users.add(acc.astype(np.int32), uid, day, self.rng)

    def _activate(self, idx: np.ndarray, day: int) -> None:
        rng, d = self.rng, self.draws
        trial = d.trial[idx]
        t_idx, p_idx = idx[trial], idx[~trial]
        self.status[t_idx] = _TRIAL
        self.plan[t_idx] = TRIAL_PLAN
        self.annual[t_idx] = False
        self.discount[t_idx] = 0.0
        self.auto_renew[t_idx] = False
        self.row_start[t_idx] = day
        self.trial_end[t_idx] = day + TRIAL_DAYS
        self._start_paying(p_idx, day)
        self.target[idx] = self.seats[idx] * rng.uniform(0.55, 0.95, idx.size)
        first = np.maximum(1, np.rint(self.target[idx] * rng.uniform(0.2, 0.5, idx.size))).astype(np.int64)
        self._add_users(np.repeat(idx, first), day)
        self.next_champion[idx] = day + rng.geometric(1 / 1100, idx.size)
        self.next_team[idx] = day + rng.geometric(1 / 900, idx.size)

    # --- the day loop ------------------------------------------------------------------------
    def run(self) -> BatchResult:
        """Simulate every day from the batch's first signup to the end; stream its events."""
        self.writer.begin_batch(self.account_ids, self.user_ids)
        first_day = int(self.act_day.min()) if self.m else self.cfg.days
        for day in range(first_day, self.cfg.days):
            self._day(day)
        self.writer.flush()
        open_idx = np.flatnonzero((self.status == _TRIAL) | (self.status == _PAYING))
        self._close_rows(open_idx, -1)  # -1: still open at the end of the simulation
        rows = {
            name: np.concatenate([r[i] for r in self._rows]) if self._rows else np.zeros(0)
            for i, name in enumerate(
                ("acc", "start", "end", "plan", "seats", "annual", "discount", "auto_renew")
            )
        }
        return BatchResult(
            rows=rows,
            converted=self.converted,
            churned=self.churned,
            expansions=self.expansions,
            contractions=self.contractions,
            n_users=len(self.user_ids),
        )

    def _day(self, day: int) -> None:
        rng, u = self.rng, self.users
        new = np.flatnonzero(self.act_day == day)
        if new.size:
            self._activate(new, day)
        self._decide(day)
        live = (self.status == _TRIAL) | (self.status == _PAYING)
        if not live.any():
            return
        m = self.m
        # Account health drifts around its long-run level; shocks decay (half-life ~4 months).
        self.h += 0.01 * (self.draws.health - self.h) + 0.04 * rng.standard_normal(m)
        self.s *= 0.994
        self.target *= np.exp(0.0006 * (self.h + self.s + 0.1))
        self._shocks(day, live)

        n = u.n
        alive = u.alive[:n]
        leaving = alive & (u.leave_day[:n] == day)
        if leaving.any():
            alive[leaving] = False
            u.left_day[:n][leaving] = day
        drifting = alive & (u.drift_day[:n] == day)
        if drifting.any():
            k = int(drifting.sum())
            # Interest fades more often than it grows: users drift away.
            u.mu[:n][drifting] += np.where(rng.random(k) < 0.75, -rng.uniform(1.0, 2.5, k),
                                           rng.uniform(0.5, 1.5, k))  # fmt: skip
            u.drift_day[:n][drifting] = day + rng.geometric(1 / 700, k)

        # Joins fill the gap between the people who want access and the people who have it,
        # capped by the seats bought; demand above the seats pushes towards expansion.
        n_alive = np.bincount(u.acc[:n][alive], minlength=m)
        gap = np.minimum(self.target, self.seats) - n_alive
        lam = np.where(live & (gap > 0), 0.05 * gap, 0.0)
        joins = np.minimum(rng.poisson(lam), np.maximum(self.seats - n_alive, 0))
        if joins.any():
            self._add_users(np.repeat(np.arange(m), joins), day)

        self._activity(day)
        if day % 32 == 0:
            n = u.n
            keep = u.alive[:n] | (day - u.left_day[:n] < 60)
            if keep.sum() < 0.75 * n:
                u.compact(keep)

    def _shocks(self, day: int, live: np.ndarray) -> None:
        rng, u = self.rng, self.users
        for a in np.flatnonzero(live & (self.next_champion == day)).tolist():
            # The champion (the most engaged user) leaves; the rest of the team loses momentum.
            idx = np.flatnonzero(u.alive[: u.n] & (u.acc[: u.n] == a))
            if idx.size >= 2:
                top = idx[np.argmax(u.e[idx])]
                u.alive[top] = False
                u.left_day[top] = day
                self.s[a] -= rng.uniform(0.6, 1.4)
                self.target[a] *= 0.9
            self.next_champion[a] = day + rng.geometric(1 / 1100)
        teams = np.flatnonzero(live & (self.next_team == day))
        if teams.size:
            # A new team is onboarded: several users at once, even beyond the seats (a true-up).
            size = np.minimum(2 + rng.poisson(0.12 * self.seats[teams]), 60)
            self.target[teams] += size
            self.s[teams] += 0.25
            self._add_users(np.repeat(teams, size), day)
            self.next_team[teams] = day + rng.geometric(1 / 900, teams.size)

    def _activity(self, day: int) -> None:
        rng, u = self.rng, self.users
        n = u.n
        if n == 0:
            return
        acc = u.acc[:n]
        alive = u.alive[:n]
        breadth = np.bitwise_count(u.adopted[:n]).astype(np.float64)
        target = u.mu[:n] + self.h[acc] + self.s[acc] + 0.15 * (breadth - 2.0)
        e = u.e[:n]
        e += 0.04 * (target - e) + 0.1 * rng.standard_normal(n)
        active = alive & (rng.random(n) < sigmoid(e + self.effects[day]))
        e[active] += 0.02  # habit: using the product today makes tomorrow more likely
        bits = u.bits[:n]
        np.left_shift(bits, _ONE, out=bits)
        np.bitwise_or(bits, active.astype(np.uint64), out=bits)
        act = np.flatnonzero(active)
        if act.size:
            self._adopt(act)
            self._events(day, act)

    def _adopt(self, act: np.ndarray) -> None:
        u = self.users
        draws = self.rng.random((act.size, _N_CORE - 1), dtype=np.float32)
        new = draws < _ADOPT_RATES * u.apt[act, None]
        u.adopted[act] |= np.bitwise_or.reduce(np.where(new, _ADOPT_BITS, np.uint8(0)), axis=1)

    def _events(self, day: int, act: np.ndarray) -> None:
        rng, u = self.rng, self.users
        a = act.size
        acc = u.acc[act]
        # Events per active user-day: a login plus a gamma-Poisson number (heavy-tailed).
        lam = u.lam[act] * rng.gamma(2.0, 0.5, a) * self.cfg.activity_scale
        count = 1 + rng.poisson(lam)
        total = int(count.sum())
        ends = np.cumsum(count)
        starts = ends - count
        grp = np.repeat(np.arange(a), count)
        # Event types: one searchsorted on row-offset cumulative weights samples every
        # event from its own user's distribution (core events only once adopted).
        weights = u.pref[act]
        weights[:, :_N_CORE] *= (u.adopted[act, None] >> _CORE_BIT_SHIFTS) & 1
        cum = np.cumsum(weights, axis=1, dtype=np.float64)
        cum /= cum[:, -1:]
        cum += np.arange(a)[:, None]
        draw = rng.random(total)
        draw += grp
        code = np.searchsorted(cum.ravel(), draw, side="right")
        code -= grp * _K
        np.minimum(code, _K - 1, out=code)  # guards against rounding at a row's upper edge
        code = code.astype(np.int8)
        code += 1
        code[starts] = LOGIN_CODE
        # Time of day: a session starting around the account's peak hour, events seconds
        # apart with the odd long pause (a second session), all within the UTC day.
        seconds = rng.standard_exponential(total)
        seconds *= 40.0
        seconds[rng.integers(0, total, total // 16)] *= 90.0
        seconds[starts] = 0.0
        np.cumsum(seconds, out=seconds)
        first, span = seconds[starts], seconds[ends - 1] - seconds[starts]
        session = rng.normal(self.draws.peak_second[acc], 2.5 * 3600) % 86_400.0
        session = np.clip(np.minimum(session, 86_399.0 - span), 0.0, None)
        seconds += np.repeat(session - first, count)
        np.minimum(seconds, 86_399.999, out=seconds)
        seconds *= 1e6
        micros = seconds.astype(np.int64)
        micros += self.start_us + day * _US_PER_DAY
        value = np.full(total, np.nan)
        exports = code == EXPORT_CODE
        value[exports] = np.rint(rng.lognormal(np.log(400.0), 1.4, int(exports.sum())))
        users = u.uid[act]
        self.writer.add(np.repeat(acc, count), np.repeat(users, count), code, micros, value)
        # NPS survey answers: rare, and they reflect how the account is doing.
        answer = np.flatnonzero(rng.random(a) < 1 / 150)
        if answer.size:
            mood = self.h[acc[answer]] + self.s[acc[answer]] + 0.3 * (u.e[act[answer]] - u.mu[act[answer]])
            score = np.rint(rng.normal(7.3 + 2.2 * mood, 1.6)).clip(0, 10)
            self.writer.add(acc[answer], users[answer], np.full(answer.size, NPS_CODE, np.int8),
                            micros[starts[answer]] + 1, score)  # fmt: skip

    # --- decisions: trial conversion, churn, expansion --------------------------------------
    def _stats(self) -> dict[str, np.ndarray]:
        u, m = self.users, self.m
        n = u.n
        acc = u.acc[:n]
        bits = u.bits[:n]
        recent = (bits & _M28) != 0
        mau = np.bincount(acc, recent, minlength=m)
        mau_prev = np.bincount(acc, (bits & _M_PREV28) != 0, minlength=m)
        dau28 = np.bincount(acc, np.bitwise_count(bits & _M28), minlength=m)
        dau14 = np.bincount(acc, np.bitwise_count(bits & _M14), minlength=m)
        core = np.bitwise_count(u.adopted[:n]).astype(np.float64)
        breadth = np.bincount(acc, recent * core, minlength=m) / np.maximum(mau, 1) / _N_CORE
        n_alive = np.bincount(acc[u.alive[:n]], minlength=m)
        return {
            "mau": mau,
            "trend": np.log((mau + 1.0) / (mau_prev + 1.0)),
            "stickiness": dau28 / (28.0 * np.maximum(mau, 1)),
            "trial_activity": dau14 / (TRIAL_DAYS * np.maximum(n_alive, 1.0)),
            "breadth": breadth,
            "n_alive": n_alive.astype(np.float64),
        }

    def _decide(self, day: int) -> None:
        trial_due = np.flatnonzero((self.status == _TRIAL) & (self.trial_end == day))
        check_due = np.flatnonzero((self.status == _PAYING) & (self.next_check == day))
        bankrupt = np.flatnonzero((self.status == _PAYING) & (self.next_bankrupt == day))
        if bankrupt.size:
            self.churned[bankrupt] = True
            self._end(bankrupt, day)
            check_due = np.setdiff1d(check_due, bankrupt)
        if not (trial_due.size or check_due.size):
            return
        st = self._stats()
        if trial_due.size:
            self._decide_trials(trial_due, day, st)
        if check_due.size:
            self._decide_paying(check_due, day, st)

    def _decide_trials(self, idx: np.ndarray, day: int, st: dict[str, np.ndarray]) -> None:
        rng = self.rng
        z = (
            0.9
            + self.cfg.conversion_shift
            + 7.0 * (st["trial_activity"][idx] - 0.2)
            + 2.0 * (st["breadth"][idx] - 0.3)
            + rng.normal(0.0, 0.7, idx.size)
        )
        convert = rng.random(idx.size) < sigmoid(z)
        won, lost = idx[convert], idx[~convert]
        self._close_rows(won, day)
        self.converted[won] = True
        self._start_paying(won, day)
        self._end(lost, day)

    def _decide_paying(self, idx: np.ndarray, day: int, st: dict[str, np.ndarray]) -> None:
        rng, cfg = self.rng, self.cfg
        leaving = self.notice[idx]
        if leaving.any():
            # Cancelled a period ago: the subscription ends now, at the end of the paid period.
            self.churned[idx[leaving]] = True
            self._end(idx[leaving], day)
            idx = idx[~leaving]
        annual = self.annual[idx]
        # Monthly plans decide every month; annual plans a month before each renewal. A
        # cancellation takes effect at the next check (the renewal), after a month's notice.
        deciding = ~annual | (self.check_k[idx] % 12 == 11)
        renewal = ~annual | (self.check_k[idx] % 12 == 0)
        seats = self.seats[idx].astype(np.float64)
        mau, trend, stick, breadth = (st[k][idx] for k in ("mau", "trend", "stickiness", "breadth"))
        util = mau / seats
        # Churn: fading active users, low stickiness, unused seats and narrow adoption raise it.
        z = (
            np.where(annual, -1.9, -4.4)
            + cfg.churn_shift
            + np.where(annual & ~self.auto_renew[idx], 0.5, 0.0)
            + np.where(self.renewals[idx] == 0, 0.2, 0.0)
            + self.draws.industry_churn[idx]
            - 1.8 * np.clip(trend, -2.0, 1.0)
            - 4.0 * (stick - 0.3)
            - 1.2 * (np.minimum(util, 1.2) - 0.6)
            - 1.0 * (breadth - 0.5)
            + np.where(mau == 0, 2.5, 0.0)
            + rng.normal(0.0, 0.8, idx.size)
        )
        budget_cut = rng.random(idx.size) < np.where(annual, 0.03, 0.003)  # unexplainable by usage
        churn = deciding & ((rng.random(idx.size) < sigmoid(z)) | budget_cut)
        cancelled = idx[churn]
        self.notice[cancelled] = True
        # Once they have decided to leave, the team moves its work elsewhere.
        self.s[cancelled] -= rng.uniform(1.5, 3.5, cancelled.size)
        # Expansion: users near or above the seats, broad core adoption and growth.
        unmet = np.maximum(self.target[idx] - seats, 0.0) / seats
        n_alive = st["n_alive"][idx]
        z_exp = (
            -5.6
            + cfg.expansion_shift
            + 3.0 * (np.minimum(n_alive / seats, 1.5) - 0.7)
            + 1.5 * (breadth - 0.5)
            + 2.0 * np.minimum(unmet, 1.0)
            + 0.8 * np.clip(trend, 0.0, 1.0)
            + rng.normal(0.0, 0.6, idx.size)
        )
        expand = ~churn & (rng.random(idx.size) < sigmoid(z_exp))
        contract = (
            renewal & ~churn & ~expand & (util < 0.45) & (rng.random(idx.size) < np.where(annual, 0.3, 0.03))
        )
        self.renewals[idx[renewal]] += 1

        changed = idx[expand | contract]
        if changed.size:
            self._close_rows(changed, day)
            up = idx[expand]
            full = (
                (n_alive[expand] / seats[expand] >= 0.85) | (unmet[expand] > 0) | (self.plan[up] == _TOP_PLAN)
            )
            more_seats = up[full]
            want = np.maximum(self.target[more_seats], n_alive[expand][full])
            grown = np.ceil(want * rng.uniform(1.1, 1.3, more_seats.size)).astype(np.int64)
            self.seats[more_seats] = np.maximum(self.seats[more_seats] + 1, grown)
            self.plan[up[~full]] += 1
            self.expansions[up] += 1
            down = idx[contract]
            self.seats[down] = np.maximum(1, np.minimum(self.seats[down] - 1, np.ceil(mau[contract] * 1.2)))
            self.contractions[down] += 1
            self._open_rows(changed, day)  # a change starts a new term (and a new row)
        same = idx[~expand & ~contract]
        self.check_k[same] += 1
        self.next_check[same] = add_months(self.base, self.anchor[same], self.check_k[same])
