"""The sampler: a Poisson sample with recorded inclusion probabilities, favouring rows worth a label, paced
by a daily byte budget that survives restarts. Fixed seeds throughout."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from support.releases import Keys, make_release

from edge_agent.serving.runtime import FunctionModel, Prediction
from edge_agent.serving.sample_budget import DAY_MS, DailyBudget
from edge_agent.serving.sampler import Sampler
from edge_agent.serving.slot import ServingModel
from edge_agent.serving.telemetry import FeatureBins, Telemetry
from edge_agent.update.journal import InstalledModel
from protocols.v1 import messages_pb2 as pb

NOON = 1_780_000_000_000 - 1_780_000_000_000 % DAY_MS + DAY_MS // 2  # a UTC noon


def _predict(x: np.ndarray) -> Prediction:
    p = np.clip(x[:, 0], 0, 1).astype(np.float32)  # the second class's probability
    return Prediction(["v1:neg" if v < 0.5 else "v1:pos" for v in p], None, np.stack([1 - p, p], axis=1))


@pytest.fixture
def serving(keys: Keys) -> ServingModel:
    release = make_release(keys.signer, "v1", 1)
    installed = InstalledModel(release.signed.SerializeToString(), release.sha256)
    return ServingModel.of(FunctionModel(3, _predict), installed)


def _rows(rng: np.random.Generator, n: int, unsure_share: float) -> np.ndarray:
    """Rows whose top-class probability is 0.55 (unsure) for `unsure_share` of them, else 0.99."""
    x = rng.random((n, 3)).astype(np.float32)
    x[:, 0] = np.where(rng.random(n) < unsure_share, 0.55, 0.99)
    return x


def test_unsure_rows_are_favoured_and_the_weights_undo_it(serving: ServingModel) -> None:
    rng = np.random.default_rng(0)
    sampler = Sampler(0.02, 100_000, random.Random(1), favour=5.0, low_confidence=0.7)
    x = _rows(rng, 40_000, unsure_share=0.25)
    for chunk in np.array_split(x, 400):  # calls of 100 rows, as a busy device makes them
        sampler.offer(serving, chunk, serving.model.predict(chunk), None, lambda: 5)
    batch = sampler.drain("dev-1", 1)
    assert batch is not None
    unsure = [s for s in batch.samples if s.confidence < 0.7]
    sure = [s for s in batch.samples if s.confidence >= 0.7]
    assert {round(s.inclusion_probability, 6) for s in unsure} == {0.1}
    assert {round(s.inclusion_probability, 6) for s in sure} == {0.02}
    assert len(unsure) > len(sure)  # 25 % of the rows, most of the sample
    # Horvitz-Thompson: sum of 1 / p estimates each group's size without bias
    truth_unsure = int((x[:, 0] == np.float32(0.55)).sum())
    assert sum(1 / s.inclusion_probability for s in unsure) == pytest.approx(truth_unsure, rel=0.1)
    assert sum(1 / s.inclusion_probability for s in sure) == pytest.approx(len(x) - truth_unsure, rel=0.1)


def test_without_favour_every_row_has_the_same_odds_and_ids_travel(serving: ServingModel) -> None:
    sampler = Sampler(1.0, 10, random.Random(2))
    x = _rows(np.random.default_rng(1), 3, 0.0)
    sampler.offer(serving, x, serving.model.predict(x), None, lambda: 7, ["a", "b", "c"])
    batch = sampler.drain("dev-1", 2)
    assert batch is not None
    assert [s.prediction_id for s in batch.samples] == ["a", "b", "c"]
    assert {s.inclusion_probability for s in batch.samples} == {1.0}
    assert batch.samples[0].confidence == pytest.approx(0.99)


def test_rows_in_bins_the_last_window_over_filled_are_favoured(keys: Keys, serving: ServingModel) -> None:
    telemetry = Telemetry("dev-1", 0, serving)
    # the reference puts a quarter of each feature in each of 4 bins (edges 0, .25, .5, .75, 1): a window
    # with every feature-1 value in [0.75, 1] over-fills that bin only
    x = np.random.default_rng(2).random((400, 3)).astype(np.float32)
    x[:, 1] = 0.8 + 0.1 * x[:, 1]
    telemetry.record(serving, x, serving.model.predict(x), 10.0)
    assert telemetry.close_window(1, 1, serving) is not None
    flagged_serving, bins, flagged = telemetry.flagged
    assert isinstance(bins, FeatureBins) and flagged is not None
    assert np.flatnonzero(flagged).tolist() == [bins.offsets[1] + 3]
    sampler = Sampler(0.05, 100_000, random.Random(3), favour=4.0)
    sampler.flag_bins(flagged_serving, bins, flagged)
    rows = np.random.default_rng(3).random((20_000, 3)).astype(np.float32)
    sampler.offer(serving, rows, serving.model.predict(rows), None, lambda: 1)
    batch = sampler.drain("dev-1", 2)
    assert batch is not None
    in_bin = [s for s in batch.samples if s.input[1] >= 0.75]
    assert {round(s.inclusion_probability, 6) for s in in_bin} == {0.2}
    assert {round(s.inclusion_probability, 6) for s in batch.samples if s.input[1] < 0.75} == {0.05}
    assert len(in_bin) == pytest.approx(0.25 * 20_000 * 0.2, rel=0.15)


def test_a_day_of_windows_spends_about_the_budget_and_never_more(serving: ServingModel, tmp_path: Path) -> None:
    budget = DailyBudget(200_000, tmp_path / "budget.json")
    hour = 3_600_000
    sampler = Sampler(1.0, 100_000, random.Random(4), budget=budget, window_ms=hour)
    rng = np.random.default_rng(4)
    day_start = NOON - DAY_MS // 2
    shipped = 0
    for w in range(24):  # a window an hour, traffic rising through the day
        x = _rows(rng, 2_000 + 200 * w, 0.1)
        sampler.offer(serving, x, serving.model.predict(x), None, lambda: day_start)
        batch = sampler.drain("dev-1", w, day_start + (w + 1) * hour - 1)
        shipped += batch.ByteSize() if batch is not None else 0
    assert budget.spent <= 200_000
    assert budget.spent >= 150_000  # paced: most of the budget used, not all in the first window
    assert shipped == pytest.approx(budget.spent, rel=0.05)  # what the budget counts is what went out
    assert sampler.base < 1.0


def test_the_days_spend_survives_a_restart_and_a_new_day_starts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "state" / "budget.json"
    first = DailyBudget(1_000, path)
    first.spend(NOON, 600)
    again = DailyBudget(1_000, path)  # the agent restarted
    assert again.remaining(NOON + 60_000) == 400
    assert again.remaining(NOON + DAY_MS) == 1_000  # tomorrow
    path.write_text("{not json")
    assert DailyBudget(1_000, path).remaining(NOON) == 1_000  # unreadable: logged, counted from 0
    assert json.loads(json.dumps({"ok": 1}))
    with pytest.raises(ValueError, match="negative"):
        DailyBudget(-1)


def test_a_spent_budget_keeps_nothing_more_today(serving: ServingModel, tmp_path: Path) -> None:
    budget = DailyBudget(1_000, tmp_path / "budget.json")
    budget.spend(NOON, 1_000)
    sampler = Sampler(1.0, 100, random.Random(5), budget=budget, window_ms=DAY_MS // 2)
    x = _rows(np.random.default_rng(5), 50, 0.0)
    sampler.offer(serving, x, serving.model.predict(x), None, lambda: NOON)
    assert sampler.drain("dev-1", 1, NOON + 60_000) is None
    assert sampler.truncated == 1
    sampler.offer(serving, x, serving.model.predict(x), None, lambda: NOON)
    assert sampler.drain("dev-1", 2, NOON + DAY_MS) is None  # the window ended the next day: odds recomputed
    sampler.offer(serving, x, serving.model.predict(x), None, lambda: NOON + DAY_MS)
    batch = sampler.drain("dev-1", 3, NOON + DAY_MS + 60_000)
    assert batch is not None and 0 < batch.ByteSize() <= 1_000 * 4


def _hint(serving: ServingModel, *pairs: tuple[int, int], model_id: str | None = None) -> pb.SamplerHint:
    ref = pb.ModelRef(model_id=model_id or serving.ref.model_id, version=serving.ref.version)
    return pb.SamplerHint(model=ref, features=[f for f, _ in pairs], bins=[k for _, k in pairs])


def _share_in(sampler: Sampler, serving: ServingModel, column: int, low: float, seed: int) -> tuple[float, set[float]]:
    rows = np.random.default_rng(seed).random((20_000, 3)).astype(np.float32)
    sampler.offer(serving, rows, serving.model.predict(rows), None, lambda: 1)
    batch = sampler.drain("dev-1", seed)
    assert batch is not None
    inside = [s for s in batch.samples if s.input[column] >= low]
    return len(inside) / len(batch.samples), {round(s.inclusion_probability, 6) for s in inside}


def test_the_clouds_hinted_bins_are_favoured_beside_the_devices_own_flags(serving: ServingModel) -> None:
    bins = FeatureBins.of(serving.manifest.reference.features)
    assert bins is not None
    own = np.zeros(bins.total, dtype=bool)
    own[bins.offsets[0] + 0] = True  # the device flagged feature 0's first bin itself
    sampler = Sampler(0.05, 100_000, random.Random(4), favour=4.0)
    sampler.flag_bins(serving, bins, own, 0)
    before, _ = _share_in(sampler, serving, 2, 0.75, 1)  # feature 2's top bin: a quarter of the rows
    assert sampler.hint(_hint(serving, (2, 3)), 10_000, serving, 0) == []
    assert sampler.hinted_bins == 1
    after, odds = _share_in(sampler, serving, 2, 0.75, 2)
    assert odds == {0.2}  # favoured 4x, and shipped with those odds (the cloud's weights undo it)
    # favoured: the hinted quarter and the own-flagged quarter (3/16 outside the hinted one), 4x each:
    # 4 x .25 / (4 x (.25 + .1875) + .5625) = 0.43
    assert before == pytest.approx(0.25, abs=0.05) and after == pytest.approx(0.43, abs=0.05)
    rows = np.random.default_rng(5).random((20_000, 3)).astype(np.float32)
    sampler.offer(serving, rows, serving.model.predict(rows), None, lambda: 1)
    batch = sampler.drain("dev-1", 9)
    assert batch is not None
    assert {round(s.inclusion_probability, 6) for s in batch.samples if s.input[0] < 0.25} == {0.2}  # its own flag too
    # a new window's own flags keep the hint; past its expiry the hint is gone
    sampler.flag_bins(serving, bins, None, 9_999)
    assert sampler.hinted_bins == 1
    sampler.flag_bins(serving, bins, None, 10_000)
    assert sampler.hinted_bins == 0
    expired, _ = _share_in(sampler, serving, 2, 0.75, 6)
    assert expired == pytest.approx(0.25, abs=0.05)


def test_a_hint_for_another_model_or_with_bins_the_profile_lacks_changes_nothing(serving: ServingModel) -> None:
    sampler = Sampler(0.05, 100_000, random.Random(5), favour=4.0)
    sampler.hint(_hint(serving, (2, 3), model_id="another"), 10_000, serving, 0)
    assert sampler.hinted_bins == 0
    share, _ = _share_in(sampler, serving, 2, 0.75, 7)
    assert share == pytest.approx(0.25, abs=0.05)
    bad = sampler.hint(_hint(serving, (2, 4), (7, 0), (1, 3)), 10_000, serving, 0)
    assert bad == ["bin 4 of feature 2 (it has 4)", "feature 7 (not binned by the model's profile)"]
    assert sampler.hinted_bins == 1  # the bin it could place
    sampler.hint(None, 0, serving, 0)  # an empty hint clears
    assert sampler.hinted_bins == 0
