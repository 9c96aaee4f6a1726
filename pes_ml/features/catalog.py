"""The feature catalog: every feature declared once, with the metadata reports are built from.

Each :class:`FeatureSpec` says what a feature means to a CS manager (description,
direction, unit) and to a data scientist (group, window, what an empty window
gives). Reason sentences, group sums and report tables come only from this
metadata.

Per-event-type counts (``events_type_<event>_30d``) depend on the event
vocabulary of the data, so they are declared by :func:`event_type_specs` once
the vocabulary is known; :data:`CATALOG` holds every other feature and the
classic PES columns. Windows are half-open, ``as_of - window <= timestamp < as_of``,
and "days since" features count whole days: 0 means "within the last 24 hours".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    import pandas as pd

Group = Literal[
    "adoption",
    "stickiness",
    "growth",
    "activity",
    "recency",
    "trend",
    "breadth",
    "seats",
    "commercial",
    "contract",
    "tenure",
]
Direction = Literal["healthier", "riskier", "neutral"]
"""Whether a higher value is usually healthier, riskier, or neither (e.g. a plan name)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of the catalog.

    Parameters
    ----------
    name
        snake_case with a window suffix, e.g. ``active_users_30d``.
    group
        The family the feature's SHAP contribution is summed into.
    window_days
        Length of the look-back window, or None for point-in-time values.
    description
        Plain English for CS, e.g. "Active users in the last 30 days".
    direction
        Whether a higher value is usually healthier, riskier or neutral.
    unit
        How to print the value: "count", "ratio", "share", "days", "currency", "category"...
    model_input
        False for features reported but not fed to the model (e.g. percentiles).
    missing
        What the feature holds when it is undefined (empty window, unknown column):
        "0" or "NaN" with the reason.
    """

    name: str
    group: Group
    window_days: int | None
    description: str
    direction: Direction
    unit: str
    model_input: bool = True
    missing: str = "0 when the window is empty"


_NAN_NO_USERS = "NaN when no user was active in the window"
_NAN_NO_SUBS = "NaN when no subscription is active at as_of or the column is absent"


def _s(
    name: str,
    group: Group,
    window: int | None,
    description: str,
    direction: Direction,
    unit: str,
    missing: str = "0 when the window is empty",
    model_input: bool = True,
) -> FeatureSpec:
    return FeatureSpec(name, group, window, description, direction, unit, model_input, missing)


_FEATURES: tuple[FeatureSpec, ...] = (
    # --- activity -------------------------------------------------------------------------
    _s("events_7d", "activity", 7, "Events in the last 7 days", "healthier", "count"),
    _s("events_30d", "activity", 30, "Events in the last 30 days", "healthier", "count"),
    _s("events_90d", "activity", 90, "Events in the last 90 days", "healthier", "count"),
    _s("events_per_active_user_7d", "activity", 7, "Events per active user in the last 7 days",
       "healthier", "ratio", _NAN_NO_USERS),
    _s("events_per_active_user_30d", "activity", 30, "Events per active user in the last 30 days",
       "healthier", "ratio", _NAN_NO_USERS),
    _s("events_per_active_user_90d", "activity", 90, "Events per active user in the last 90 days",
       "healthier", "ratio", _NAN_NO_USERS),
    _s("value_sum_30d", "activity", 30, "Sum of event values in the last 30 days", "neutral", "sum"),
    _s("value_sum_90d", "activity", 90, "Sum of event values in the last 90 days", "neutral", "sum"),
    _s("events_type_other_30d", "activity", 30,
       "Events of types outside the most common ones in the last 30 days", "neutral", "count"),
    _s("active_users_7d", "activity", 7, "Active users in the last 7 days", "healthier", "count"),
    _s("active_users_30d", "activity", 30, "Active users in the last 30 days", "healthier", "count"),
    _s("active_users_90d", "activity", 90, "Active users in the last 90 days", "healthier", "count"),
    # --- seats ----------------------------------------------------------------------------
    _s("seats", "seats", None, "Seats paid for", "neutral", "count",
       "NaN when neither an active subscription nor the account gives seats"),
    _s("seat_utilization_30d", "seats", 30, "Share of paid seats used in the last 30 days",
       "healthier", "share", "NaN when seats are unknown or 0"),
    # --- stickiness -----------------------------------------------------------------------
    _s("dau_mau_30d", "stickiness", 30, "Average daily active users over monthly active users (30 days)",
       "healthier", "ratio", _NAN_NO_USERS),
    _s("dau_wau_7d", "stickiness", 7, "Average daily active users over weekly active users (7 days)",
       "healthier", "ratio", _NAN_NO_USERS),
    _s("wau_mau_30d", "stickiness", 30, "Users active in the last 7 days over those active in 30 days",
       "healthier", "ratio", _NAN_NO_USERS),
    _s("active_days_30d", "stickiness", 30, "Days with any use in the last 30 days", "healthier", "days"),
    _s("power_user_share_7d", "stickiness", 7,
       "Share of the month's active users who used the product 5 or more of the last 7 days",
       "healthier", "share", _NAN_NO_USERS),
    _s("l28_1to7_share_28d", "stickiness", 28, "Share of users active 1-7 of the last 28 days",
       "neutral", "share", _NAN_NO_USERS),
    _s("l28_8to14_share_28d", "stickiness", 28, "Share of users active 8-14 of the last 28 days",
       "healthier", "share", _NAN_NO_USERS),
    _s("l28_15to21_share_28d", "stickiness", 28, "Share of users active 15-21 of the last 28 days",
       "healthier", "share", _NAN_NO_USERS),
    _s("l28_22to28_share_28d", "stickiness", 28, "Share of users active 22-28 of the last 28 days",
       "healthier", "share", _NAN_NO_USERS),
    # --- adoption and breadth -------------------------------------------------------------
    _s("core_events_per_active_user_30d", "adoption", 30,
       "Distinct core features used per active user in the last 30 days", "healthier", "ratio",
       _NAN_NO_USERS + " or no core events are known"),
    _s("core_events_ever_share", "adoption", None, "Share of core features the account has ever used",
       "healthier", "share", "NaN when no core events are known"),
    _s("days_to_first_core_event", "adoption", None,
       "Days from the account's start to its first use of a core feature (time to value)",
       "riskier", "days", "NaN until a core event is used"),
    _s("event_types_30d", "breadth", 30, "Distinct features used in the last 30 days", "healthier", "count"),
    _s("core_events_used_30d", "breadth", 30, "Distinct core features used in the last 30 days",
       "healthier", "count", "0 when the window is empty; NaN when no core events are known"),
    # --- growth ---------------------------------------------------------------------------
    _s("new_users_30d", "growth", 30, "Users active for the first time in the last 30 days",
       "healthier", "count"),
    _s("resurrected_users_30d", "growth", 30,
       "Users back in the last 30 days after more than 30 days away", "healthier", "count"),
    _s("dropped_users_30d", "growth", 30, "Users active 31-60 days ago but not in the last 30 days",
       "riskier", "count"),
    _s("growth_ratio_30d", "growth", 30,
       "New plus resurrected minus dropped users, relative to the users of the prior 30 days",
       "healthier", "ratio", "NaN when no user was active 31-60 days ago"),
    # --- trend ----------------------------------------------------------------------------
    _s("events_trend_30d", "trend", 60, "Events in the last 30 days over the 30 days before",
       "healthier", "ratio", "NaN when the prior 30 days had no events"),
    _s("active_users_trend_30d", "trend", 60, "Active users in the last 30 days over the 30 days before",
       "healthier", "ratio", "NaN when the prior 30 days had no active user"),
    _s("active_days_trend_30d", "trend", 60, "Active days in the last 30 days over the 30 days before",
       "healthier", "ratio", "NaN when the prior 30 days had no active day"),
    _s("wau_slope_12w", "trend", 84, "Weekly change in weekly active users over the last 12 weeks",
       "healthier", "users per week", "0 when no user was active in 12 weeks"),
    # --- recency --------------------------------------------------------------------------
    _s("days_since_last_event", "recency", None, "Days since the account's last event", "riskier", "days",
       "NaN when the account has no event before as_of"),
    _s("days_since_last_core_event", "recency", None, "Days since the account last used a core feature",
       "riskier", "days", "NaN when no core event before as_of"),
    _s("days_since_last_new_user", "recency", None, "Days since a new user first became active",
       "riskier", "days", "NaN when the account has no user before as_of"),
    # --- tenure and commercial ------------------------------------------------------------
    _s("tenure_days", "tenure", None, "Days since the account started", "healthier", "days",
       "NaN when no start (created_at, subscription or event) is known before as_of"),
    _s("plan", "commercial", None, "Plan", "neutral", "category", "missing when unknown"),
    _s("segment", "commercial", None, "Segment", "neutral", "category", "missing when unknown"),
    _s("mrr", "commercial", None, "Monthly recurring revenue (after discount)", "neutral", "currency",
       _NAN_NO_SUBS),
    _s("mrr_change_90d", "commercial", 90, "Change in MRR over the last 90 days", "healthier", "currency",
       "NaN when no subscription was active 90 days before as_of, or its MRR is unknown"),
    # --- contract: from the main subscription, the active one with the largest MRR ---------
    _s("billing_period_months", "contract", None, "Billing period in months", "neutral", "months",
       _NAN_NO_SUBS),
    _s("days_to_renewal", "contract", None, "Days until the next renewal date", "neutral", "days",
       _NAN_NO_SUBS),
    _s("renewal_in_horizon", "contract", None, "A renewal falls inside the prediction horizon",
       "riskier", "flag", _NAN_NO_SUBS),
    _s("discount", "contract", None, "Discount on the main subscription", "neutral", "share",
       _NAN_NO_SUBS),
    _s("auto_renew", "contract", None, "The main subscription renews automatically", "healthier", "flag",
       _NAN_NO_SUBS),
)

_CLASSIC: tuple[FeatureSpec, ...] = (
    _s("adoption", "adoption", 30, "Classic PES adoption: core features used per active user (30 days)",
       "healthier", "ratio", "0 when no user was active", model_input=False),
    _s("stickiness", "stickiness", 30, "Classic PES stickiness: DAU/MAU over the last 30 days",
       "healthier", "ratio", "0 when no user was active", model_input=False),
    _s("growth", "growth", 30, "Classic PES growth: (new + resurrected - dropped) / max(prior users, 1)",
       "healthier", "ratio", model_input=False),
    _s("adoption_percentile", "adoption", 30, "Adoption percentile among accounts at the same date",
       "healthier", "percentile", "NaN when core events are unknown", model_input=False),
    _s("stickiness_percentile", "stickiness", 30, "Stickiness percentile among accounts at the same date",
       "healthier", "percentile", model_input=False),
    _s("growth_percentile", "growth", 30, "Growth percentile among accounts at the same date",
       "healthier", "percentile", model_input=False),
    _s("classic_pes", "adoption", 30, "Classic Product Engagement Score (0-100)", "healthier", "score",
       "mean of the available percentiles", model_input=False),
)

CATALOG: Final[tuple[FeatureSpec, ...]] = _FEATURES + _CLASSIC
"""Every feature with a fixed name, then the classic PES columns (not model inputs)."""

CATEGORICAL_FEATURES: Final = ("plan", "segment")
"""Features kept as strings in the FeatureFrame; training converts them to ``category`` in one place."""

EVENT_TYPE_PREFIX: Final = "events_type_"
OTHER_EVENT_TYPE: Final = "events_type_other_30d"
_EVENT_TYPE_PATTERN: Final = re.compile(r"^events_type_[a-z0-9_]+_30d$")


def event_type_slug(event: str) -> str:
    """The snake_case form of an event name used in its feature name."""
    slug = re.sub(r"[^a-z0-9]+", "_", event.lower()).strip("_")
    return slug or "blank"


def event_type_columns(event_types: Sequence[str]) -> dict[str, str]:
    """Event name -> feature name ``events_type_<slug>_30d``, unique even when slugs collide."""
    columns: dict[str, str] = {}
    taken = {OTHER_EVENT_TYPE}
    for event in event_types:
        base = f"{EVENT_TYPE_PREFIX}{event_type_slug(event)}"
        name, suffix = f"{base}_30d", 2
        while name in taken:
            name, suffix = f"{base}_{suffix}_30d", suffix + 1
        taken.add(name)
        columns[event] = name
    return columns


def event_type_specs(event_types: Sequence[str]) -> tuple[FeatureSpec, ...]:
    """Specs of the per-event-type counts for a vocabulary (the most common event types)."""
    return tuple(
        _s(name, "activity", 30, f"'{event}' events in the last 30 days", "healthier", "count")
        for event, name in event_type_columns(event_types).items()
    )


def catalog_version(specs: tuple[FeatureSpec, ...]) -> str:
    """A short hash that changes whenever any definition changes."""
    payload = json.dumps([asdict(s) for s in specs], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


# Bump the suffix when a computation changes without any metadata change (3: tenure_days and
# days_to_first_core_event count an event from the end of its day, as days_since_last_event does;
# mrr_change_90d is NaN, not the whole MRR, when the MRR 90 days before is unknown).
_DEFINITIONS_REVISION: Final = "definitions-3"
CATALOG_VERSION: Final[str] = catalog_version(
    (*CATALOG, _s(_DEFINITIONS_REVISION, "activity", None, "", "neutral", ""))
)


def feature_specs(features: pd.DataFrame | None = None) -> tuple[FeatureSpec, ...]:
    """The catalog, plus the per-event-type specs of a FeatureFrame when one is given."""
    if features is None:
        return CATALOG
    event_types = features.attrs.get("event_types")
    if event_types is None:
        event_types = []
    return CATALOG + event_type_specs(list(event_types))


def model_feature_names(features: pd.DataFrame | None = None) -> list[str]:
    """The model inputs, in a fixed order.

    Parameters
    ----------
    features
        Optional FeatureFrame. Without it: the fixed-name features of the catalog.
        With it: also its per-event-type columns (``events_type_<event>_30d``), in
        the frame's order, after the fixed ones.

    Returns
    -------
    list of str
        Column names to feed the model; ``plan`` and ``segment`` are strings.
    """
    names = [spec.name for spec in CATALOG if spec.model_input]
    if features is not None:
        names += [
            c for c in features.columns if _EVENT_TYPE_PATTERN.match(str(c)) and c not in names
        ]
    return names
