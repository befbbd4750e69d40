"""A probability sample of live inputs, with their predictions, for labels and retraining -> pb.SampleBatch.

Each row is kept on its own draw (a Poisson sample) with a known inclusion probability p, shipped with the
row, so the cloud can weight it by 1 / p (Horvitz-Thompson) and still estimate fleet accuracy without bias
while the sampler favours what matters:

    p = min(1, base x favour)   rows the model is unsure of (top-class probability < low_confidence),
                                rows falling in a bin the last window over-filled (Telemetry.flagged) and
                                rows in a bin the cloud's drift verdicts point at (a SamplerHint, until
                                it expires, for the model it names)
    p = min(1, base)            every other row

`base` is set at each window's start from the daily byte budget (DailyBudget, persisted): what is left
today spread over the windows left today, divided by the rows and bytes the last windows saw, never above
`rate`. So a busy device samples a smaller share and a quiet one a larger, and the day's bytes stay near
the budget whatever the traffic. Two caps are safety nets, not the design: `max_per_window` samples and
a window's bytes (4x its share of the day, or one sample, and never past the day's budget); a capped window keeps its
first rows only, so the cloud's weights are right only where the caps did not bind (`truncated` counts it).

Rather than a draw per row, the gap to the next candidate is drawn at the largest p (geometric: the same
odds), and a candidate is kept with p_row / p_max (thinning), so a call that keeps nothing costs a
subtraction, and the prediction's strings, scores and the time are worked out only for candidates.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_agent.serving.confidence import top_class
from edge_agent.serving.hints import hint_mask, names_model
from edge_agent.serving.sample_budget import DAY_MS, DailyBudget, ms_to_midnight
from edge_agent.serving.slot import ServingModel
from edge_agent.serving.telemetry import FeatureBins, prediction_strings
from protocols import SCHEMA_VERSION
from protocols.v1 import messages_pb2 as pb

_NEVER = 1 << 62
_FRAMING_BYTES = 3  # a Sample's tag and length inside its batch
_FIRST_GUESS_BYTES = 300  # per sample, until one has been measured
_BATCH_BYTES = 64  # a SampleBatch's own fields (device id, seq, model), kept out of a window's byte cap
_SMOOTHING = 0.3  # weight of the newest window in the traffic estimates
BYTE_CAP_WINDOWS = 4  # a window may spend up to this many windows' share of the day's budget


class Sampler:
    def __init__(
        self,
        rate: float,
        max_per_window: int,
        rng: random.Random | None = None,
        *,
        budget: DailyBudget | None = None,
        window_ms: int = 60_000,
        favour: float = 1.0,
        low_confidence: float = 0.0,
    ) -> None:
        if favour < 1:
            raise ValueError(f"favour multiplies odds and must be >= 1, got {favour}")
        self.rate = rate  # the ceiling of the base probability
        self.max_per_window = max_per_window
        self.budget = budget
        self.window_ms = window_ms
        self.favour = favour
        self.low_confidence = low_confidence
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._samples: list[pb.Sample] = []
        self._model: pb.ModelRef | None = None
        self._flagged: tuple[ServingModel, np.ndarray, np.ndarray, np.ndarray] | None = None  # serving, cols, lo, hi
        # what _flagged merges: the device's own flags (serving, bins, over-filled) and the cloud's hint
        self._local: tuple[ServingModel | None, FeatureBins | None, np.ndarray | None] = (None, None, None)
        self._hint: tuple[pb.SamplerHint, int] | None = None  # the hint, its expiry (ms)
        self.hinted_bins = 0  # bins of the serving model the hint adds
        self._merge_lock = threading.Lock()  # one merge at a time (_lock guards what offer() reads)
        # this window's odds and caps
        self.base = max(min(rate, 1.0), 0.0)
        self._p_max = min(1.0, self.base * favour)
        # until the first window ends: a full day's share, as if the day had just begun
        self._byte_cap: float = math.inf
        if budget is not None:
            share = BYTE_CAP_WINDOWS * budget.limit * window_ms / DAY_MS
            self._byte_cap = min(budget.limit - budget.spent, max(share, _FIRST_GUESS_BYTES)) - _BATCH_BYTES
        self._window_bytes = 0
        # traffic, for pacing the next window
        self._rows = 0  # offered this window (racy increments: an estimate)
        self._candidates = self._favoured = 0
        self._rows_estimate: float | None = None
        self._favoured_share = 0.0
        self._bytes_per_sample: float | None = None
        self.truncated = 0  # windows a cap cut short
        self._skip = self._gap()  # rows to pass over before the next candidate

    def _gap(self) -> int:
        if self._p_max >= 1:
            return 0
        if self._p_max <= 0:
            return _NEVER
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - self._p_max))

    def flag_bins(
        self, serving: ServingModel | None, bins: FeatureBins | None, flagged: np.ndarray | None,
        now_ms: int | None = None,
    ) -> None:  # fmt: skip
        """Favour rows of `serving` that fall in the flagged bins (flat, as FeatureBins counts them: the bins
        the last window over-filled), and in the cloud's hinted bins while its hint holds (see hint)."""
        with self._merge_lock:
            self._local = (serving, bins, flagged)
            self._merge(now_ms)

    def hint(self, hint: pb.SamplerHint | None, expires_at_ms: int, serving: ServingModel | None,
             now_ms: int | None = None) -> list[str]:  # fmt: skip
        """The cloud's hint (None or no bins: none), favoured beside the device's own flags until
        `expires_at_ms`, for rows of the model it names (rows of any other model: no effect). Returns the
        hinted bins it could not place on `serving`'s profile (they are left out)."""
        with self._merge_lock:  # the agent's thread takes hints, a caller's may close a window meanwhile
            self._hint = (hint, expires_at_ms) if hint is not None and len(hint.features) else None
            if serving is not None and self._local[0] is not serving:  # the flags of another model are moot
                self._local = (serving, None, None)
            return self._merge(now_ms)

    def _merge(self, now_ms: int | None) -> list[str]:
        serving, bins, flagged = self._local
        if self._hint is not None and now_ms is not None and self._hint[1] <= now_ms:
            self._hint = None  # expired: the cloud refreshes a hint that still holds well before this
        bad: list[str] = []
        self.hinted_bins = 0
        if serving is not None and self._hint is not None and names_model(self._hint[0], serving.ref):
            bins = bins if bins is not None else FeatureBins.of(serving.manifest.reference.features)
            if bins is not None:
                hinted, bad = hint_mask(self._hint[0], bins)
                self.hinted_bins = int(hinted.sum())
                flagged = hinted if flagged is None else flagged | hinted
        self._set_intervals(serving, bins, flagged)
        return bad

    def _set_intervals(
        self, serving: ServingModel | None, bins: FeatureBins | None, flagged: np.ndarray | None
    ) -> None:
        """Kept as (column, low, high) intervals, so checking a candidate row is one comparison per bin."""
        if serving is None or bins is None or flagged is None or not flagged.any():
            with self._lock:
                self._flagged = None
            return
        columns, lows, highs = [], [], []
        for flat in np.flatnonzero(flagged).tolist():
            f = int(np.searchsorted(bins.offsets, flat, side="right")) - 1
            k, size = flat - bins.offsets[f], bins.sizes[f]
            columns.append(bins.indexes[f])
            lows.append(-np.inf if k == 0 else float(bins.padded[f, k - 1]))
            highs.append(np.inf if k == size - 1 else float(bins.padded[f, k]))
        with self._lock:
            self._flagged = (serving, np.asarray(columns), np.asarray(lows), np.asarray(highs))

    def _is_favoured(self, serving: ServingModel, row: np.ndarray, confidence: float | None) -> bool:
        if confidence is not None and confidence < self.low_confidence:
            return True
        flagged = self._flagged
        if flagged is None or flagged[0] is not serving:
            return False
        _, columns, lows, highs = flagged
        if columns[-1] >= row.shape[0]:  # a row narrower than the profile: only the columns it has
            keep = columns < row.shape[0]
            columns, lows, highs = columns[keep], lows[keep], highs[keep]
        values = row[columns]
        return bool(((values >= lows) & (values < highs)).any())

    def offer(
        self, serving: ServingModel, x: np.ndarray, prediction: Any, label: str | None, now_ms: Callable[[], int],
        prediction_ids: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        """Maybe keep some rows of this call (`prediction_ids`: the caller's id of each row, if any). Most
        calls keep none, and should cost next to nothing."""
        rows = x.shape[0]
        self._rows += rows
        if self._skip >= rows or self.max_per_window <= 0:
            self._skip -= rows  # unlocked: a race only shifts which row is kept next, never the odds much
            return
        with self._lock:
            scores = getattr(prediction, "scores", None)
            picked: list[tuple[int, float, float | None]] = []  # row, inclusion probability, confidence
            capped = False
            while self._skip < rows:
                if len(self._samples) + len(picked) >= self.max_per_window or self._window_bytes >= self._byte_cap:
                    capped = True
                    break
                i = max(self._skip, 0)
                self._skip += 1 + self._gap()
                top = top_class(scores[i : i + 1]) if scores is not None else None
                confidence = None if top is None else float(top[0])
                favoured = self.favour > 1 and self._is_favoured(serving, x[i], confidence)
                self._candidates += 1
                self._favoured += favoured
                p = min(1.0, self.base * (self.favour if favoured else 1.0))
                if p >= self._p_max or self._rng.random() * self._p_max < p:
                    picked.append((i, p, confidence))
                    self._window_bytes += int(self._bytes_per_sample or _FIRST_GUESS_BYTES)  # refined below
            if capped:
                self.truncated += 1
                self._skip = _NEVER  # no more draws until drain() opens the next window
            else:
                self._skip -= rows
            if not picked:
                return
            strings, ts_ms = prediction_strings(prediction), now_ms()
            self._model = serving.ref
            for i, p, confidence in picked:
                sample = pb.Sample(
                    input=x[i].astype(np.float32).tolist(),
                    prediction=strings[i],
                    label=label if label is not None and len(x) == 1 else "",
                    ts_ms=ts_ms,
                    prediction_id=prediction_ids[i] if prediction_ids is not None and i < len(prediction_ids) else "",
                    inclusion_probability=p,
                    confidence=confidence or 0.0,
                )
                size = sample.ByteSize() + _FRAMING_BYTES
                self._window_bytes += size - int(self._bytes_per_sample or _FIRST_GUESS_BYTES)
                self._samples.append(sample)

    def drain(self, device_id: str, seq: int, now_ms: int | None = None) -> pb.SampleBatch | None:
        """The samples of the window now ending (None if there are none); the day's spend is recorded (at
        `now_ms`) and the next window's odds are set."""
        with self._lock:
            samples, self._samples = self._samples, []
            model, self._model = self._model, None
            self._window_bytes = 0
            batch = None
            if samples:
                batch = pb.SampleBatch(schema_version=SCHEMA_VERSION, device_id=device_id, seq=seq, samples=samples)
                if model is not None:
                    batch.model.CopyFrom(model)
            self._pace(samples, batch.ByteSize() if batch is not None else 0, now_ms)  # the exact bytes shipped
            self._skip = self._gap()
        return batch

    def _pace(self, samples: list[pb.Sample], spent: int, now_ms: int | None) -> None:
        rows, self._rows = self._rows, 0
        self._rows_estimate = rows if self._rows_estimate is None else _mix(self._rows_estimate, rows)
        if self._candidates:
            self._favoured_share = _mix(self._favoured_share, self._favoured / self._candidates)
        self._candidates = self._favoured = 0
        if samples:
            measured, known = spent / len(samples), self._bytes_per_sample
            self._bytes_per_sample = measured if known is None else _mix(known, measured)
        if self.budget is None or now_ms is None:
            return
        if spent:
            self.budget.spend(now_ms, spent)
        remaining = self.budget.remaining(now_ms)
        allowance = remaining / max(1, math.ceil(ms_to_midnight(now_ms) / self.window_ms))
        per_row = (self._bytes_per_sample or _FIRST_GUESS_BYTES) * (1 + self._favoured_share * (self.favour - 1))
        demand = max(self._rows_estimate, 1.0) * per_row
        self.base = max(min(self.rate, allowance / demand, 1.0), 0.0)
        self._p_max = min(1.0, self.base * self.favour)
        # room for one sample at least: a share smaller than a sample still ships one, at its odds
        per_sample = self._bytes_per_sample or _FIRST_GUESS_BYTES
        self._byte_cap = min(remaining, max(BYTE_CAP_WINDOWS * allowance, per_sample)) - _BATCH_BYTES


def _mix(old: float, new: float) -> float:
    return (1 - _SMOOTHING) * old + _SMOOTHING * new
