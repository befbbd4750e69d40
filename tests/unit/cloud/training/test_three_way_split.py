"""The demo's data in three parts: a retrain on what the devices send back must not have seen the rows its
judgement uses. By content hash, the pool the devices draw from shares no row with the training or the
held-out rows, and a field row that is a held-out reference row is left out of a challenger's fit."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cloud import registry
from cloud.cli.demo import POOL_SIZE, TEST_SIZE
from cloud.training.pipeline import load_dataset


def _hashes(X: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.asarray(row, dtype=np.float32).tobytes()).hexdigest() for row in X}


def test_the_pool_shares_no_row_with_the_training_or_held_out_rows() -> None:
    split = load_dataset("digits", test_size=TEST_SIZE, seed=0, pool_size=POOL_SIZE)
    train, held, pool = _hashes(split.X_train), _hashes(split.X_test), _hashes(split.X_pool)
    assert len(train) + len(held) + len(pool) == 1797  # every row in exactly one part
    assert not train & held and not train & pool and not held & pool
    assert (len(split.X_train), len(split.X_test), len(split.X_pool)) == (808, 449, 540)
    assert set(np.unique(split.y_pool)) == set(np.unique(split.y_train))  # stratified: every class in each part
    assert split.content_hash != load_dataset("digits", test_size=TEST_SIZE, seed=0).content_hash


def test_without_a_pool_the_split_and_its_hash_are_those_of_before() -> None:
    split = load_dataset("digits", test_size=0.3, seed=0)
    assert len(split.X_pool) == 0 and len(split.X_test) == 540
    arrays = (split.X_train, split.y_train, split.X_test, split.y_test)
    assert split.content_hash == registry.content_hash(*(a.tobytes() for a in arrays))  # a registry's hashes hold
    with pytest.raises(ValueError, match="no such rows"):
        split.profile_rows("pool")
    with pytest.raises(ValueError, match="leave rows to train on"):
        load_dataset("digits", test_size=0.5, seed=0, pool_size=0.5)
