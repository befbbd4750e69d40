"""Errors the compiler raises; every one carries a message fit to show a user as it is.

CompileError                 base
├── UnsupportedModelError    "not supported yet: <estimator>" (or an option of it)
├── GateRefusedError         no candidate kept the accuracy of the source model; `.report` has the figures
└── BadInputError            a model or data file that cannot be read, or arrays of the wrong shape
"""

from __future__ import annotations

from typing import Any


class CompileError(Exception):
    code = "compile_failed"


class UnsupportedModelError(CompileError):
    code = "unsupported"

    def __init__(self, what: str) -> None:
        super().__init__(f"not supported yet: {what}")
        self.what = what


class GateRefusedError(CompileError):
    code = "gate_refused"

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class BadInputError(CompileError):
    code = "bad_input"
