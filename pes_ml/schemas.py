"""Column names and types of the frames that cross stages.

Refer to columns through these constants, never through scattered literals.
All timestamps are UTC and tz-aware; all ids are strings.
"""

from __future__ import annotations

from typing import Final

# --- canonical input tables (the data contract) ---------------------------------------------
ACCOUNT_ID: Final = "account_id"
USER_ID: Final = "user_id"
EVENT: Final = "event"
TIMESTAMP: Final = "timestamp"
VALUE: Final = "value"

START: Final = "start"
END: Final = "end"
MRR: Final = "mrr"
SEATS: Final = "seats"
PLAN: Final = "plan"
BILLING_PERIOD_MONTHS: Final = "billing_period_months"
DISCOUNT: Final = "discount"
AUTO_RENEW: Final = "auto_renew"
LIST_MRR: Final = "list_mrr"

CREATED_AT: Final = "created_at"
SEGMENT: Final = "segment"
NAME: Final = "name"

AS_OF: Final = "as_of"
REASON: Final = "reason"
SOURCE_ROW: Final = "source_row"

TABLES: Final = ("events", "subscriptions", "accounts")

# Required and optional columns of each input table, with their canonical DuckDB type.
REQUIRED_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "events": (ACCOUNT_ID, EVENT, TIMESTAMP),
    "subscriptions": (ACCOUNT_ID, START, END),
    "accounts": (ACCOUNT_ID,),
}

COLUMN_TYPES: Final[dict[str, dict[str, str]]] = {
    "events": {
        ACCOUNT_ID: "VARCHAR",
        USER_ID: "VARCHAR",
        EVENT: "VARCHAR",
        TIMESTAMP: "TIMESTAMPTZ",
        VALUE: "DOUBLE",
    },
    "subscriptions": {
        ACCOUNT_ID: "VARCHAR",
        START: "TIMESTAMPTZ",
        END: "TIMESTAMPTZ",
        MRR: "DOUBLE",
        LIST_MRR: "DOUBLE",
        SEATS: "DOUBLE",
        PLAN: "VARCHAR",
        BILLING_PERIOD_MONTHS: "DOUBLE",
        DISCOUNT: "DOUBLE",
        AUTO_RENEW: "BOOLEAN",
    },
    "accounts": {
        ACCOUNT_ID: "VARCHAR",
        NAME: "VARCHAR",
        CREATED_AT: "TIMESTAMPTZ",
        PLAN: "VARCHAR",
        SEGMENT: "VARCHAR",
        SEATS: "DOUBLE",
    },
}

# --- frames produced by the stages -----------------------------------------------------------
FEATURE_KEY: Final = (ACCOUNT_ID, AS_OF)
DAYS_SINCE_LAST_EVENT: Final = "days_since_last_event"
"""A catalog feature other stages read by name: a baseline, and the score check for an as_of past the data."""
CHURNED: Final = "churned"
EXPANDED: Final = "expanded"
CONVERTED: Final = "converted"
LABEL_COLUMNS: Final = (CHURNED, EXPANDED, CONVERTED)

CHURN_PROBABILITY: Final = "churn_probability"
EXPANSION_PROBABILITY: Final = "expansion_probability"
PES: Final = "pes"
EXPANSION_SCORE: Final = "expansion_score"
TIER: Final = "tier"
RUN_ID: Final = "run_id"
MODEL_NAME: Final = "model_name"
MODEL_VERSION: Final = "model_version"
