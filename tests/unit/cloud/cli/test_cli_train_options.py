"""`edgefleet train` offers the compiler's quantization choices."""

from __future__ import annotations

from cloud.cli.train import QUANTIZE_CHOICES
from model_compiler.types import QUANTIZE_CHOICES as COMPILER_CHOICES


def test_train_offers_the_compilers_quantization_choices() -> None:
    assert tuple(QUANTIZE_CHOICES) == tuple(COMPILER_CHOICES)
    assert "fp16" in QUANTIZE_CHOICES and "auto" in QUANTIZE_CHOICES
