"""Tests of pes_ml.explain: exact SHAP, additivity, PES points, groups, reasons, change attribution."""

from __future__ import annotations

import functools
import math
import re
import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pes_ml import explain, treeshap
from pes_ml.errors import ExplanationError, PesError
from pes_ml.features.catalog import FeatureSpec

SPECS = {
    s.name: s
    for s in (
        FeatureSpec(
            "active_users_30d", "activity", 30, "Active users in the last 30 days", "healthier", "count"
        ),
        FeatureSpec("active_users_prev_30d", "growth", 30, "Active users 30-60 days ago", "neutral", "count"),
        FeatureSpec("dau_mau_30d", "stickiness", 30, "DAU/MAU over the last 30 days", "healthier", "ratio"),
        FeatureSpec("seats_used_share", "seats", None, "Share of seats in use", "healthier", "share"),
        FeatureSpec("days_since_last_event", "recency", None, "Days since the last event", "riskier", "days"),
        FeatureSpec("mrr", "commercial", None, "Monthly recurring revenue", "neutral", "currency"),
        FeatureSpec("plan", "commercial", None, "Plan", "neutral", "category"),
        FeatureSpec("core_events_30d", "adoption", 30, "Core events used", "healthier", "count"),
    )
}
FEATURES = list(SPECS)
PLANS = ["free", "team", "business", "enterprise", "custom"]
AS_OF = pd.Timestamp("2026-11-01", tz="UTC")


def make_features(seed: int, n: int, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    """A small feature frame with counts, missing values, zeros and a categorical plan."""
    rng = np.random.default_rng(seed)
    active = rng.poisson(6, n).astype(float)
    features = pd.DataFrame(
        {
            "account_id": [f"a{i:04d}" for i in range(n)],
            "as_of": as_of,
            "active_users_30d": active,
            "active_users_prev_30d": rng.poisson(6, n).astype(float),
            "dau_mau_30d": np.where(rng.random(n) < 0.1, np.nan, rng.beta(2, 5, n)),
            "seats_used_share": np.where(rng.random(n) < 0.2, 0.0, rng.random(n)),
            "days_since_last_event": np.where(rng.random(n) < 0.1, np.nan, rng.exponential(10, n).round()),
            "mrr": rng.gamma(2, 500, n).round(2),
            "plan": pd.Categorical(rng.choice(PLANS, n), categories=PLANS),
            "core_events_30d": rng.integers(0, 8, n).astype(float),
        }
    )
    features["account_id"] = features["account_id"].astype("str")
    return features


def make_labels(features: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    logit = (
        -0.3 * (features["active_users_30d"] - features["active_users_prev_30d"])
        - 2.0 * features["dau_mau_30d"].fillna(0.0)
        + 0.05 * features["days_since_last_event"].fillna(40.0)
        + features["plan"].cat.codes.map({0: 1.0, 1: 0.0, 2: -0.5, 3: -1.0, 4: 0.5})
        - 0.2 * features["core_events_30d"]
    )
    return (rng.random(len(features)) < 1 / (1 + np.exp(-logit))).astype(int)


@functools.cache
def trained(seed: int, num_leaves: int = 15, max_depth: int = -1, extra: tuple = ()) -> lgb.Booster:
    features = make_features(seed, 1500)
    params = {
        "objective": "binary",
        "num_leaves": num_leaves,
        "max_depth": max_depth,
        "learning_rate": 0.1,
        "min_data_in_leaf": 5,
        "min_data_per_group": 5,
        "cat_smooth": 1.0,
        "max_cat_to_onehot": 2,
        "verbose": -1,
        "num_threads": 1,
        "seed": seed,
        **dict(extra),
    }
    data = lgb.Dataset(features[FEATURES], make_labels(features, seed))
    return lgb.train(params, data, num_boost_round=40)


def scoring_rows(seed: int, n: int = 400) -> pd.DataFrame:
    """Rows to explain, with edge values: zeros, NaN, tiny numbers, unseen and missing plans."""
    features = make_features(seed + 100, n)
    features.loc[:9, "active_users_30d"] = 0.0
    features.loc[10:19, "seats_used_share"] = 1e-40  # inside LightGBM's zero band
    features.loc[20:29, "mrr"] = np.nan
    features.loc[30:39, "plan"] = np.nan
    return features


def contrib(booster: lgb.Booster, X: pd.DataFrame) -> np.ndarray:
    return booster.predict(X[FEATURES], pred_contrib=True)


# --- exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_leaves", "max_depth", "extra"),
    [
        (4, 2, ()),
        (15, -1, ()),
        (63, -1, (("min_data_in_leaf", 2),)),
        (31, 6, (("max_cat_to_onehot", 8),)),
        (15, -1, (("zero_as_missing", True),)),
        (15, -1, (("use_missing", False),)),
    ],
)
def test_shap_values_equal_lightgbm_pred_contrib(seed, num_leaves, max_depth, extra):
    booster = trained(seed, num_leaves, max_depth, extra)
    X = scoring_rows(seed)
    result = explain.shap_values(booster, X[FEATURES])
    expected = contrib(booster, X)
    np.testing.assert_allclose(result.contributions, expected[:, :-1], rtol=0, atol=1e-9)
    assert result.base_value == pytest.approx(expected[0, -1], abs=1e-9)
    assert result.feature_names == tuple(FEATURES)
    assert result.units == "log-odds"
    np.testing.assert_allclose(
        result.raw_score, booster.predict(X[FEATURES], raw_score=True), rtol=0, atol=1e-12
    )


def test_shap_values_equal_shap_tree_explainer(seed):
    shap = pytest.importorskip("shap")
    booster = trained(seed, 31)
    X = scoring_rows(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shap's notice that binary LightGBM output changed shape
        expected = np.asarray(shap.TreeExplainer(booster).shap_values(X[FEATURES]))
    if expected.ndim == 3:  # one matrix per class in some shap versions
        expected = expected[-1]
    result = explain.shap_values(booster, X[FEATURES])
    assert np.max(np.abs(result.contributions - expected)) <= 1e-6


def test_shap_values_accept_columns_in_any_order_and_category_codes(seed):
    booster = trained(seed)
    X = scoring_rows(seed)
    shuffled = X[FEATURES[::-1]]
    codes = X[FEATURES].assign(plan=X["plan"].cat.codes.replace(-1, np.nan).astype(float)).to_numpy(float)
    by_frame = explain.shap_values(booster, shuffled)
    by_codes = explain.shap_values(booster, codes)
    np.testing.assert_array_equal(by_frame.contributions, by_codes.contributions)


def test_shap_values_map_categories_like_lightgbm_when_levels_differ(seed):
    booster = trained(seed)
    X = scoring_rows(seed)
    # Same labels, different category order and an unseen level: LightGBM maps them back.
    X["plan"] = X["plan"].cat.add_categories(["legacy"]).cat.reorder_categories(["legacy", *PLANS[::-1]])
    X.loc[40:44, "plan"] = "legacy"
    result = explain.shap_values(booster, X[FEATURES])
    np.testing.assert_allclose(result.contributions, contrib(booster, X)[:, :-1], rtol=0, atol=1e-9)


def test_trees_past_the_fast_path_limits_fall_back_to_lightgbm_exactly(seed, monkeypatch):
    booster = trained(seed, 31)
    X = scoring_rows(seed)
    text = booster.model_to_string()
    assert treeshap.pack_model(text, max_path_features=3).fallback_trees.size > 0
    half = treeshap.pack_model(text).table_bytes // 2
    packed = treeshap.pack_model(text, table_budget_bytes=half)  # half of the trees by table size
    assert packed.fallback_trees.size > 0
    assert packed.fast_trees.size > 0
    monkeypatch.setattr(explain.contributions, "_packed_model", lambda *_: packed)
    result = explain.shap_values(booster, X[FEATURES])
    np.testing.assert_allclose(result.contributions, contrib(booster, X)[:, :-1], rtol=0, atol=1e-9)


def test_shap_values_accept_a_fitted_lgbm_classifier(seed):
    features = make_features(seed, 600)
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=seed)
    model.fit(features[FEATURES], make_labels(features, seed))
    X = scoring_rows(seed)[FEATURES]
    result = explain.shap_values(model, X)
    expected = model.predict(X, pred_contrib=True)
    np.testing.assert_allclose(result.contributions, expected[:, :-1], rtol=0, atol=1e-9)


def test_single_thread_and_parallel_results_are_identical(seed):
    booster = trained(seed)
    X = scoring_rows(seed)
    one = explain.shap_values(booster, X[FEATURES], n_threads=1)
    two = explain.shap_values(booster, X[FEATURES], n_threads=2)
    np.testing.assert_array_equal(one.contributions, two.contributions)


# --- additivity and contract errors --------------------------------------------------------------


def test_additivity_check_raises_on_corrupted_contributions(seed):
    booster = trained(seed)
    result = explain.shap_values(booster, scoring_rows(seed)[FEATURES])
    corrupted = result.contributions.copy()
    corrupted[7, 2] += 1e-4
    with pytest.raises(ExplanationError, match=r"do not add up .* at row 7 \(1 of 400 rows off\)"):
        explain.check_additivity(corrupted, result.base_value, result.raw_score)
    with pytest.raises(ExplanationError, match="do not add up"):
        explain.check_additivity(result.contributions, result.base_value + 1e-5, result.raw_score)


def test_shap_values_refuse_to_return_values_that_do_not_add_up(seed, monkeypatch):
    booster = trained(seed)
    real = treeshap.tree_shap
    monkeypatch.setattr(treeshap, "tree_shap", lambda packed, X: real(packed, X) * 1.001)
    with pytest.raises(ExplanationError, match="do not add up to the model's raw score"):
        explain.shap_values(booster, scoring_rows(seed)[FEATURES])


def test_explanation_error_is_a_pes_error():
    assert issubclass(ExplanationError, PesError)


def test_shap_values_name_missing_and_unexpected_columns(seed):
    booster = trained(seed)
    X = scoring_rows(seed)[FEATURES].rename(columns={"mrr": "mrr_usd"})
    with pytest.raises(ExplanationError, match=r"Missing: \['mrr'\]; unexpected: \['mrr_usd'\]"):
        explain.shap_values(booster, X)


def test_shap_values_refuse_an_empty_frame(seed):
    with pytest.raises(ExplanationError, match="at least one row"):
        explain.shap_values(trained(seed), scoring_rows(seed)[FEATURES].iloc[:0])


def test_shap_values_reject_multiclass_models(seed):
    rng = np.random.default_rng(seed)
    data = lgb.Dataset(rng.normal(size=(300, 3)), rng.integers(0, 3, 300))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, data, 3)
    with pytest.raises(ExplanationError, match="3 trees per iteration"):
        explain.shap_values(booster, rng.normal(size=(5, 3)))


# --- PES points ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["churn", "expansion"])
def test_pes_points_add_up_to_distance_from_50_before_clipping(seed, model):
    booster = trained(seed)
    result = explain.shap_values(booster, scoring_rows(seed)[FEATURES])
    slope = 0.8 + np.random.default_rng(seed).random()
    higher = explain.HIGHER_RAW_IS_BETTER[model]
    points = explain.to_pes_points(result.contributions, slope, higher_is_better=higher)
    unclipped = explain.pes_from_raw(result.raw_score, result.base_value, slope, higher, clip=False)
    np.testing.assert_allclose(points.sum(axis=1), unclipped - 50.0, rtol=0, atol=1e-9)
    clipped = explain.pes_from_raw(result.raw_score, result.base_value, slope, higher)
    assert clipped.min() >= 0.0
    assert clipped.max() <= 100.0
    np.testing.assert_allclose(clipped, np.clip(unclipped, 0, 100))


def test_pes_is_50_at_the_base_value_and_ten_points_per_doubling_of_odds():
    base = -1.2
    doubled = base + math.log(2.0)  # calibrated slope 1: the odds of churn double
    pes = explain.pes_from_raw(np.array([base, doubled, base + 100.0]), base, 1.0, higher_is_better=False)
    np.testing.assert_allclose(pes, [50.0, 40.0, 0.0])
    expansion = explain.pes_from_raw(np.array([doubled]), base, 1.0, higher_is_better=True)
    np.testing.assert_allclose(expansion, [60.0])


def test_pes_points_refuse_a_non_positive_platt_slope():
    with pytest.raises(ExplanationError, match="Platt slope must be a positive"):
        explain.to_pes_points(np.zeros(3), -0.5)


# --- long format and groups ---------------------------------------------------------------------


def explained_long(seed: int, model: str = "churn", n: int = 400, as_of=AS_OF, slope: float = 0.9):
    booster = trained(seed)
    X = scoring_rows(seed, n)
    X["as_of"] = as_of
    result = explain.shap_values(booster, X[FEATURES])
    long = explain.long_format(result, X, model=model, specs=SPECS, platt_slope=slope)
    return X, result, long


def test_long_format_has_one_row_per_account_and_feature(seed):
    X, result, long = explained_long(seed)
    assert list(long.columns) == list(explain.LONG_COLUMNS)
    assert len(long) == len(X) * len(FEATURES)
    row = long[(long["account_id"] == "a0030") & (long["feature"] == "plan")].iloc[0]
    assert row["value"] is None or pd.isna(row["value"])  # missing plan
    first = long[long["account_id"] == "a0000"].set_index("feature")
    assert first.loc["active_users_30d", "value"] == "0"
    assert first.loc["plan", "value"] in PLANS
    assert first.loc["dau_mau_30d", "group"] == "stickiness"
    np.testing.assert_array_equal(first["shap_log_odds"].to_numpy(), result.contributions[0])
    mrr = float(X.loc[45, "mrr"])
    assert float(long[(long["account_id"] == "a0045") & (long["feature"] == "mrr")]["value"].iloc[0]) == mrr


def test_long_format_requires_every_feature_in_the_catalog(seed):
    X = scoring_rows(seed)
    result = explain.shap_values(trained(seed), X[FEATURES])
    specs = {k: v for k, v in SPECS.items() if k != "mrr"}
    with pytest.raises(ExplanationError, match=r"no entry for model feature\(s\) \['mrr'\]"):
        explain.long_format(result, X, model="churn", specs=specs, platt_slope=1.0)


def long_of(values: dict[str, object], n: int = 3) -> pd.DataFrame:
    """The long table of a hand-made frame (SHAP values all 0.1): one column per feature."""
    names = tuple(values)
    frame = pd.DataFrame({"account_id": [f"a{i}" for i in range(n)], "as_of": AS_OF, **values})
    result = explain.ShapResult(np.full((n, len(names)), 0.1), -1.0, np.zeros(n), names, 0.0)
    return explain.long_format(result, frame, model="churn", specs=SPECS, platt_slope=1.0)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (3.0, "3"),  # integral values print as integers
        (-0.0, "0"),
        (-2.0, "-2"),
        (0.5, "0.5"),
        (1234.56, "1234.56"),
        (123456789012.5, "123456789012.5"),  # Arrow prints this one as 1.234567890125e+11
        (4.5e-05, "4.5e-05"),  # below 1e-4 repr switches to an exponent
        (1e-40, "1e-40"),
        (999999999999999.0, "999999999999999"),
        (1e15, "1000000000000000.0"),  # from 1e15 on: repr, not int
        (1e16, "1e+16"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
    ],
)
def test_long_format_value_text_is_the_shortest_exact_repr(number, text):
    long = long_of({"mrr": [number, 1.25, number]})
    assert long["value"].tolist() == [text, "1.25", text]
    if math.isfinite(number):
        assert float(text) == number


def test_long_format_value_text_matches_repr_at_every_magnitude(seed):
    # Arrow prints most floats (faster than repr); this guards against a pyarrow that prints differently.
    rng = np.random.default_rng(seed)
    n = 20_000
    numbers = rng.standard_normal(n) * 10.0 ** rng.integers(-9, 20, n)
    head, digits = numbers[: n // 4].tolist(), rng.integers(0, 6, n // 4).tolist()
    numbers[: n // 4] = [round(v, d) for v, d in zip(head, digits, strict=True)]  # few decimals, integers
    numbers[rng.random(n) < 0.01] = np.nan
    expected = [
        None
        if math.isnan(v)
        else str(int(v))
        if math.isfinite(v) and abs(v) < 1e15 and v == round(v)
        else repr(v)
        for v in numbers.tolist()
    ]
    long = long_of({"mrr": numbers}, n=n)
    assert [None if pd.isna(v) else v for v in long["value"]] == expected


def test_long_format_value_text_keeps_missing_values_missing():
    long = long_of(
        {
            "mrr": [np.nan, 2.0, np.nan],
            "core_events_30d": pd.array([None, 4, 5], dtype="Int64"),
            "plan": pd.Categorical(["team", None, "free"], categories=PLANS),
            "active_users_30d": pd.Series([None, "7", "8"], dtype="str"),
        }
    )
    assert long["value"].dtype == "str"
    assert [None if pd.isna(v) else v for v in long["value"]] == [
        *(None, None, "team", None),  # a0: every feature missing but the plan
        *("2", "4", None, "7"),  # a1: missing plan
        *(None, "5", "free", "8"),
    ]


def test_long_format_value_text_of_a_feature_missing_for_every_account_is_missing():
    # e.g. a trend before any history exists: found by training on generated data
    long = long_of({"mrr": [np.nan, np.nan, np.nan], "core_events_30d": [1.0, np.nan, 3.0]})
    assert [None if pd.isna(v) else v for v in long["value"]] == [None, "1", None, None, None, "3"]


def test_long_format_writes_category_labels_as_text():
    long = long_of({"plan": pd.Categorical([3, None, 1], categories=[1, 2, 3])})
    assert [None if pd.isna(v) else v for v in long["value"]] == ["3", None, "1"]


def test_long_format_reads_text_columns_made_of_several_arrow_chunks():
    plans = pd.concat([pd.Series(["team", None], dtype="str"), pd.Series(["free"], dtype="str")])
    assert plans.array._pa_array.num_chunks == 2  # as after concatenating feature frames
    long = long_of({"plan": plans.reset_index(drop=True)})
    assert [None if pd.isna(v) else v for v in long["value"]] == ["team", None, "free"]


def test_long_format_of_no_rows_has_the_long_columns_and_types(seed):
    X, _, long = explained_long(seed, n=20)
    empty = explain.ShapResult(np.zeros((0, len(FEATURES))), -1.0, np.zeros(0), tuple(FEATURES), 0.0)
    nothing = explain.long_format(empty, X.iloc[:0], model="churn", specs=SPECS, platt_slope=1.0)
    assert list(nothing.columns) == list(explain.LONG_COLUMNS)
    assert len(nothing) == 0
    pd.testing.assert_series_equal(nothing.dtypes, long.dtypes)
    reasons = explain.top_reasons(nothing, SPECS)
    assert len(reasons) == 0
    assert list(reasons.columns) == [*explain.LONG_COLUMNS[:3], "rank", *explain.LONG_COLUMNS[3:], "sentence"]
    change = explain.attribute_change(nothing, long, SPECS)
    assert len(change.accounts) == len(change.features) == len(change.groups) == 0


def test_group_sums_equal_feature_sums(seed):
    _, result, long = explained_long(seed)
    groups = explain.group_contributions(long, SPECS)
    per_account = groups.groupby("account_id")[["shap_log_odds", "pes_points"]].sum()
    by_feature = long.groupby("account_id")[["shap_log_odds", "pes_points"]].sum()
    np.testing.assert_allclose(
        per_account.to_numpy(), by_feature.loc[per_account.index].to_numpy(), atol=1e-12
    )
    commercial = groups[(groups["account_id"] == "a0001") & (groups["group"] == "commercial")]
    account = long[long["account_id"] == "a0001"].set_index("feature")
    assert commercial["shap_log_odds"].iloc[0] == pytest.approx(
        account.loc["mrr", "shap_log_odds"] + account.loc["plan", "shap_log_odds"]
    )
    matrix = explain.group_contributions(result, SPECS)
    np.testing.assert_allclose(matrix.sum(axis=1), result.contributions.sum(axis=1), atol=1e-12)
    assert set(matrix.columns) == {spec.group for spec in SPECS.values()}


# --- reasons ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        ("3", "count", "3"),
        (1234.0, "count", "1,234"),
        ("2.25", "count", "2.2"),
        ("0.4213", "ratio", "0.42"),
        ("0.4213", "share", "42%"),
        ("0.004", "share", "0.4%"),
        ("1", "days", "1 day"),
        ("12", "days", "12 days"),
        ("1234.4", "currency", "$1,234"),
        ("enterprise", "category", "enterprise"),
        (None, "count", "no data"),
        (float("nan"), "ratio", "no data"),
    ],
)
def test_format_value_by_unit(value, unit, text):
    assert explain.format_value(value, unit) == text


def test_every_reason_direction_matches_its_shap_sign(seed):
    frames = [explained_long(seed, model, n=600)[2] for model in ("churn", "expansion")]
    # A catalog whose directions are all the opposite of the usual meaning must not change words.
    flipped = {
        name: FeatureSpec(
            s.name,
            s.group,
            s.window_days,
            s.description,
            {"healthier": "riskier", "riskier": "healthier"}.get(s.direction, "neutral"),
            s.unit,
        )
        for name, s in SPECS.items()
    }
    for specs in (SPECS, flipped):
        reasons = explain.top_reasons(pd.concat(frames), specs, k=4)
        assert len(reasons) > 1000
        for row in reasons.itertuples():
            outcome = "churn risk" if row.model == "churn" else "expansion likelihood"
            word = "raises" if row.shap_log_odds > 0 else "lowers"
            assert row.sentence.endswith(f" \u2014 {word} {outcome}"), row.sentence
            assert np.sign(row.pes_points) == (
                np.sign(row.shap_log_odds) * (1 if row.model == "expansion" else -1)
            )


def test_top_reasons_are_the_k_largest_nonzero_contributions(seed):
    _, result, long = explained_long(seed)
    reasons = explain.top_reasons(long, SPECS, k=3)
    first = reasons[reasons["account_id"] == "a0002"]
    assert first["rank"].tolist() == [1, 2, 3][: len(first)]
    account = long[(long["account_id"] == "a0002") & (long["shap_log_odds"] != 0)]
    expected = account.reindex(account["pes_points"].abs().sort_values(ascending=False).index)["feature"]
    assert first["feature"].tolist() == expected.head(3).tolist()
    assert reasons.groupby("account_id").size().max() == 3
    assert (reasons["shap_log_odds"] != 0).all()


def test_reason_sentence_reads_from_the_catalog_and_the_prior_window():
    long = pd.DataFrame(
        {
            "account_id": ["a1", "a1"],
            "as_of": [AS_OF, AS_OF],
            "model": ["churn", "churn"],
            "feature": ["active_users_30d", "active_users_prev_30d"],
            "group": ["activity", "growth"],
            "value": ["3", "9"],
            "shap_log_odds": [0.4, 0.0],
            "pes_points": [-5.2, 0.0],
        }
    )
    reasons = explain.top_reasons(long, SPECS, k=3, companions={"active_users_30d": "active_users_prev_30d"})
    assert reasons["sentence"].tolist() == [
        "Active users in the last 30 days: 3 (was 9 in the prior 30 days) \u2014 raises churn risk"
    ]


def test_top_reasons_do_not_depend_on_the_order_of_rows(seed):
    _, _, long = explained_long(seed, n=200)
    reasons = explain.top_reasons(long, SPECS, k=3)
    shuffled = explain.top_reasons(long.sample(frac=1.0, random_state=seed), SPECS, k=3)
    key = ["account_id", "rank"]
    pd.testing.assert_frame_equal(
        reasons.sort_values(key).reset_index(drop=True), shuffled.sort_values(key).reset_index(drop=True)
    )


def test_top_reasons_break_ties_by_feature_name_and_say_no_data_for_missing_values():
    long = pd.DataFrame(
        {
            "account_id": "a1",
            "as_of": AS_OF,
            "model": "churn",
            "feature": ["mrr", "dau_mau_30d", "seats_used_share"],
            "group": ["commercial", "stickiness", "seats"],
            "value": pd.array([None, "0.25", "0.5"], dtype="str"),
            "shap_log_odds": [-0.2, 0.2, 0.2],  # equal strength: alphabetical order
            "pes_points": [2.0, -2.0, -2.0],
        }
    )
    for value in (long["value"], long["value"].astype(object), long["value"].astype("category")):
        reasons = explain.top_reasons(long.assign(value=value), SPECS, k=3)
        assert reasons["sentence"].tolist() == [
            "DAU/MAU over the last 30 days: 0.25 \u2014 raises churn risk",
            "Monthly recurring revenue: no data \u2014 lowers churn risk",
            "Share of seats in use: 50% \u2014 raises churn risk",
        ]


@pytest.mark.parametrize("k", [1, 3, 8, 9, 40])
def test_top_k_selection_equals_a_full_lexsort_with_ties_and_nan(seed, k):
    rng = np.random.default_rng(seed)
    n = 5000
    group = rng.integers(0, 300, n)  # interleaved groups
    strength = -np.abs(rng.integers(0, 6, n).astype(float))  # many ties
    strength[rng.random(n) < 0.05] = np.nan  # sorts last
    name = rng.integers(0, 4, n)
    order = np.lexsort((name, strength, group))
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rows, ranks = explain.reasons._first_k(group, strength, name, k)
    np.testing.assert_array_equal(rows, order[rank < k])
    np.testing.assert_array_equal(ranks, rank[rank < k])


def test_rows_without_an_account_key_are_never_reasons(seed):
    _, _, long = explained_long(seed, n=50)
    long.loc[long["account_id"] == "a0003", "account_id"] = np.nan
    reasons = explain.top_reasons(long, SPECS, k=3)
    assert reasons["account_id"].notna().all()
    assert reasons["account_id"].nunique() == 49


# --- change attribution -------------------------------------------------------------------------


def test_change_attribution_deltas_add_up_to_the_pes_change(seed):
    previous_as_of = pd.Timestamp("2026-10-25", tz="UTC")
    _, _, previous = explained_long(seed, n=300, as_of=previous_as_of)
    # The current run: the same accounts one week later, with fewer active users.
    booster = trained(seed)
    X = scoring_rows(seed, 300)
    X["active_users_30d"] = (X["active_users_30d"] - 3).clip(lower=0)
    X["core_events_30d"] = (X["core_events_30d"] - 2).clip(lower=0)
    result = explain.shap_values(booster, X[FEATURES])
    current = explain.long_format(result, X, model="churn", specs=SPECS, platt_slope=0.9)
    current = current[current["account_id"] != "a0299"]  # churned in between: nothing to attribute

    change = explain.attribute_change(
        previous, current, SPECS, previous_model_version="3", current_model_version="3"
    )
    accounts = change.accounts.set_index("account_id")
    assert len(accounts) == 299
    per_feature = change.features.groupby("account_id")["delta_points"].sum()
    np.testing.assert_allclose(per_feature.loc[accounts.index], accounts["pes_delta"], rtol=0, atol=1e-9)
    per_group = change.groups.groupby("account_id")["delta_points"].sum()
    np.testing.assert_allclose(per_group.loc[accounts.index], accounts["pes_delta"], rtol=0, atol=1e-9)
    pes_now = explain.pes_from_raw(result.raw_score, result.base_value, 0.9, False, clip=False)[:299]
    np.testing.assert_allclose(accounts["pes_current"], pes_now, atol=1e-9)
    assert not accounts["model_version_changed"].any()

    fell = accounts[accounts["pes_delta"] <= -1.5].iloc[0]
    pattern = r"PES fell \d+ points? since 2026-10-25: [a-z].* \(\u2212\d+(\.\d)?\)"
    assert re.fullmatch(pattern + r".*", fell["sentence"]), fell["sentence"]


def test_change_attribution_flags_a_model_version_change(seed):
    _, _, previous = explained_long(seed, n=50, as_of=pd.Timestamp("2026-10-25", tz="UTC"))
    _, _, current = explained_long(seed, n=50, slope=1.1)
    change = explain.attribute_change(
        previous, current, SPECS, previous_model_version={"churn": "3"}, current_model_version={"churn": "4"}
    )
    assert change.accounts["model_version_changed"].all()
    assert change.accounts["sentence"].str.contains("model changed from version 3 to 4").all()
    np.testing.assert_allclose(
        change.features.groupby("account_id")["delta_points"].sum().to_numpy(),
        change.accounts.set_index("account_id")["pes_delta"].to_numpy(),
        atol=1e-9,
    )


def test_change_attribution_does_not_depend_on_the_order_of_rows(seed):
    _, _, previous = explained_long(seed, n=120, as_of=pd.Timestamp("2026-10-25", tz="UTC"))
    _, _, current = explained_long(seed, n=120, slope=1.3)
    previous = previous[previous["feature"] != "mrr"]  # a feature only in the current run counts 0 before
    change = explain.attribute_change(previous, current, SPECS)
    shuffled = explain.attribute_change(
        previous.sample(frac=1.0, random_state=seed), current.sample(frac=1.0, random_state=seed + 1), SPECS
    )
    for part in ("accounts", "features", "groups"):
        key = [c for c in ("account_id", "feature", "group") if c in getattr(change, part).columns]
        ordered, unordered = (
            getattr(c, part).sort_values(key).reset_index(drop=True) for c in (change, shuffled)
        )
        pd.testing.assert_frame_equal(ordered, unordered, check_exact=False, rtol=0, atol=1e-9)
    mrr = change.features[change.features["feature"] == "mrr"].set_index("account_id")["delta_points"]
    now = current[current["feature"] == "mrr"].set_index("account_id")["pes_points"]
    np.testing.assert_allclose(mrr, now.loc[mrr.index], rtol=0, atol=1e-12)
