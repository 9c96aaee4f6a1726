"""A seeded, streaming simulator of a multi-user B2B SaaS product.

It is the default data for the demo, the docs, the tests and the benchmarks:
realistic enough that churn and expansion models find real but imperfect
signal, fast enough (millions of events per second) and bounded in memory
(accounts in batches, events streamed to Parquet part files) to produce 100M
events on a laptop. ::

    from pes_ml.simulate import SimulationConfig, simulate_saas
    summary = simulate_saas(SimulationConfig(n_accounts=2000, days=540, seed=7), "data/sim")
    print(summary.describe())

Outputs (columns from :mod:`pes_ml.schemas`)
--------------------------------------------
- ``events/part-NNNNN.parquet``: account_id, user_id, event, timestamp (UTC, µs), value
  (null except ``nps_response`` 0-10 and ``export`` rows exported).
- ``subscriptions.parquet``: one row per contract period with constant terms; a seat or
  plan change closes the row and opens a new one that day; churn = the last row ends.
- ``accounts.parquet``: account_id, name, created_at, plan (initial), segment, seats
  (initial), industry.

Sizing: about ``EVENTS_PER_ACCOUNT_DAY`` (~9) events per account per simulated day,
~5,000 events per account at 540 days; ``SimulationConfig.for_target_events(n)``
picks ``n_accounts`` for a target volume.

Mechanisms
----------
Accounts
    Sign up over time (a launch cohort in the first 30 days, then uniformly until 85%
    of the range), so there are cohorts. Segment (smb 62%, mid_market 28%, enterprise
    10%) sets seats (log-normal: ~5, ~24, ~80), plan (starter/team/business/enterprise),
    the chance of annual billing (25/55/85%) and discounts (annual 8-20%, enterprise
    15-30%; some monthly promos). 15% start on a 14-day ``trial`` plan (MRR 0).
    Each account has a long-run *health* and a current health that drifts around it
    (mean-reverting random walk), plus decaying *shocks*.
Users
    Join to fill the gap between the people who want access (a per-account target that
    grows with health) and the users the account has, capped by seats; a new team
    onboarded (rare shock) joins at once, even beyond the seats (a true-up). A user is
    power (10%), regular or casual: a personal long-run activity log-odds. New users start
    well below it (onboarding) and converge; each active day adds a little (habit); the
    log-odds also follows the account's health and shocks and the number of core features
    the user has adopted. Users drift away (their interest falls, sometimes rises), leave
    the company (~28% a year), and when the *champion* (most engaged user) leaves, the
    account takes a negative shock that decays over months: the others' activity falls.
Activity and events
    Each day a user is active with probability sigmoid(engagement + day effect): weekends
    -2 log-odds, Dec 24 - Jan 1 -1.2. An active day is a login plus a gamma-Poisson number
    of events (per-user mean log-normal, power users double): heavy-tailed, a few power
    users make much of the volume. Event types follow each user's taste over 5 core
    events (only once adopted; adoption happens on active days at a per-feature rate
    times the user's aptitude) and 10 peripheral events with Zipf-like popularity.
    Sessions start around the account's busiest hour (its time zone); events are seconds
    apart with the odd long pause. NPS answers (rare) reflect the account's health.
Churn (emerges from behaviour)
    Decided every month for monthly billing, and one month before each renewal (start +
    12k months) for annual billing; a cancellation takes effect at the next check, i.e.
    at the end of the paid period or at the renewal (so renewal timing matters). The
    log-odds rise with a falling number of monthly active users (last 28 days vs the 28
    before), low stickiness (DAU/MAU), unused seats, narrow core adoption, no active user
    at all, annual contracts without auto-renewal, the first renewal, and the industry;
    plus Gaussian noise. On top, unexplainable churn: budget cuts (3% of annual renewals,
    0.3% of monthly periods) and rare mid-term shutdowns of annual accounts (~3% a year).
    During the notice month the team moves its work elsewhere (a large negative shock), so
    activity falls before the end, as it does in real cancellations. Churned accounts have
    no events from 00:00 UTC of their end date on (no tolerance; the tests check it).
Expansion (emerges from behaviour)
    Evaluated monthly for every paying account: the log-odds rise with users near or
    above the seats, demand above the seats, broad core adoption and growth. A full
    account buys more seats (to its demand plus 10-30%); otherwise it moves up a plan.
    Underused accounts may contract at renewal. Any change starts a new term (and row),
    so the next renewal is always the row's start plus whole billing periods.
Trials
    At day 14 a trial converts with log-odds rising with the share of user-days active
    and core adoption during the trial (about half convert); the rest end.
Defaults give roughly 15-25% churn and 10-20% expansions per paying account-year.

Determinism: one ``SeedSequence(seed)`` spawns a generator for the accounts, the names
and each batch; the same config (batch size included) gives byte-identical files.
"""

from __future__ import annotations

from pes_ml.simulate.config import EVENT_NAMES, EVENTS_PER_ACCOUNT_DAY, SimulationConfig
from pes_ml.simulate.run import SimulationSummary, simulate_saas

__all__ = ["EVENTS_PER_ACCOUNT_DAY", "EVENT_NAMES", "SimulationConfig", "SimulationSummary", "simulate_saas"]
