"""The whole job on simulated data, as a batch scheduler runs it: train, promote, score twice.

Module-scoped: one simulation and one training serve every test here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from simulated_project import project_settings

from pes_ml import explain
from pes_ml import schemas as S
from pes_ml.config import PesConfig
from pes_ml.errors import DataContractError, DriftError, ModelNotFoundError
from pes_ml.ingest import ingest
from pes_ml.registry import load_pes_model, promote
from pes_ml.score import score_accounts
from pes_ml.simulate import SimulationConfig, simulate_saas
from pes_ml.store import RunStore
from pes_ml.training import run_training

pytestmark = pytest.mark.slow

FIRST_AS_OF = "2025-05-01"
SECOND_AS_OF = "2025-06-01"


def _config(tmp: Path, **overrides: object) -> PesConfig:
    return PesConfig.model_validate({**project_settings(tmp), **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> PesConfig:
    tmp = tmp_path_factory.mktemp("pipeline")
    simulate_saas(SimulationConfig(n_accounts=700, days=540, start="2024-01-01", seed=11), tmp / "sim")
    config = _config(tmp)
    ingest(config)
    run_training(config)
    # This module tests scoring; the promotion gate has its own tests (tests/test_registry.py).
    promote(config, force=True)
    return config


@pytest.fixture(scope="module")
def first_run(trained: PesConfig):
    return score_accounts(trained, FIRST_AS_OF)


def test_the_drift_reference_is_the_last_week_of_data_one_date_per_weekday(trained: PesConfig) -> None:
    # Activity swings between weekdays and weekends: a reference of one weekday flagged drift for a
    # scoring run on a Sunday (2025-06-01 below scores without it).
    model, _ = load_pes_model(trained)
    dates = [pd.Timestamp(d) for d in model.metadata["drift_reference_as_of"].split(", ")]
    assert len(dates) == 7
    assert {d.day_of_week for d in dates} == set(range(7))
    assert dates[-1] == pd.Timestamp(model.metadata["data_end"][:10])


def test_scoring_without_a_champion_names_the_fix(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(ModelNotFoundError, match="pes-ml train"):
        load_pes_model(config)


def test_every_active_account_gets_scores_within_range(first_run) -> None:
    scores = first_run.scores
    assert len(scores) > 100
    assert scores[S.ACCOUNT_ID].is_unique
    assert scores[S.CHURN_PROBABILITY].between(0, 1).all()
    assert scores[S.EXPANSION_PROBABILITY].between(0, 1).all()
    assert scores[S.PES].between(0, 100).all()
    assert set(scores[S.TIER]) <= {"at_risk", "watch", "healthy", "expand"}
    assert (scores[S.MODEL_VERSION] == first_run.manifest["model"]["version"]).all()
    assert (scores[S.RUN_ID] == first_run.run_id).all()


def test_pes_points_add_up_to_the_distance_from_fifty(first_run) -> None:
    scores = first_run.scores.set_index(S.ACCOUNT_ID)
    churn = first_run.reasons[first_run.reasons[explain.MODEL] == "churn"]
    points = churn.groupby(S.ACCOUNT_ID)[explain.PES_POINTS].sum()
    unclipped = scores[S.PES].between(0.001, 99.999)
    np.testing.assert_allclose(
        (50 + points).reindex(scores.index)[unclipped], scores.loc[unclipped, S.PES], atol=1e-6
    )


def test_higher_churn_probability_means_lower_pes(first_run) -> None:
    scores = first_run.scores
    order = scores.sort_values(S.CHURN_PROBABILITY)
    assert order[S.PES].is_monotonic_decreasing


def test_reason_sentences_match_the_sign_of_their_points(first_run) -> None:
    scores = first_run.scores
    with_reasons = scores[scores["reason_1"] != ""]
    assert len(with_reasons) > 0.9 * len(scores)
    for sentence in with_reasons["reason_1"]:
        assert "churn risk" in sentence


def test_rerunning_the_same_as_of_replaces_the_run(trained: PesConfig, first_run) -> None:
    again = score_accounts(trained, FIRST_AS_OF)
    store = RunStore.from_config(trained)
    runs = store.runs()
    same_day = runs[runs[S.AS_OF].astype(str).str.startswith(FIRST_AS_OF)]
    assert len(same_day) == 1
    assert same_day[S.RUN_ID].iloc[0] == again.run_id
    pd.testing.assert_series_equal(
        again.scores[S.PES].reset_index(drop=True), first_run.scores[S.PES].reset_index(drop=True)
    )


def test_second_as_of_attributes_the_change_since_the_previous_run(trained: PesConfig, first_run) -> None:
    second = score_accounts(trained, SECOND_AS_OF)
    both = second.scores.merge(first_run.scores, on=S.ACCOUNT_ID, suffixes=("", "_before"))
    assert len(both) > 50
    unclipped = both[S.PES].between(0.001, 99.999) & both[f"{S.PES}_before"].between(0.001, 99.999)
    np.testing.assert_allclose(
        both.loc[unclipped, "pes_delta"],
        both.loc[unclipped, S.PES] - both.loc[unclipped, f"{S.PES}_before"],
        atol=1e-6,
    )
    moved = both[unclipped & (both["pes_delta"].abs() >= 1)]
    assert len(moved) > 0
    assert moved["what_changed"].str.contains("PES (?:rose|fell)").all()
    assert second.manifest["change"]["previous_as_of"].startswith(FIRST_AS_OF)


def test_an_as_of_before_any_data_is_an_error_not_an_empty_run(trained: PesConfig) -> None:
    with pytest.raises(DataContractError, match="No account is active"):
        score_accounts(trained, "2020-01-01")


def test_an_as_of_after_the_end_of_the_data_is_named_as_such_in_the_drift_error(trained: PesConfig) -> None:
    # The simulated data ends in June 2025: in September every account looks inactive, and the
    # drift error says why rather than only suspecting the export.
    with pytest.raises(DriftError, match=r"No account has an event in the \d+ days before as_of 2025-09-01: "
                                         r"is it after the end of the data\?"):
        score_accounts(trained, "2025-09-01")


def test_drift_above_threshold_stops_the_run_unless_allowed(trained: PesConfig) -> None:
    strict = trained.model_copy(
        update={"score": trained.score.model_copy(update={"psi_warn": 0.0, "psi_error": 0.0})}
    )
    with pytest.raises(DriftError, match="--allow-drift"):
        score_accounts(strict, "2025-04-01")
    assert not any(
        str(as_of).startswith("2025-04-01") for as_of in RunStore.from_config(strict).runs()[S.AS_OF]
    )
    allowed = score_accounts(strict, "2025-04-01", allow_drift=True)
    assert allowed.drift.errors
    assert math.isfinite(max(allowed.drift.psi.values()))
