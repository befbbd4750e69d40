"""model_compiler's public surface is what its __init__ exports, and nothing is missing from __all__."""

from __future__ import annotations

import model_compiler


def test_all_names_exist_and_public_names_are_listed() -> None:
    for name in model_compiler.__all__:
        assert hasattr(model_compiler, name), name
    public = {n for n in vars(model_compiler) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(model_compiler, n)).__name__ == "module"}
    assert public - submodules == set(model_compiler.__all__)


def test_error_tree() -> None:
    assert issubclass(model_compiler.UnsupportedModelError, model_compiler.CompileError)
    assert issubclass(model_compiler.GateRefusedError, model_compiler.CompileError)
    assert issubclass(model_compiler.BadInputError, model_compiler.CompileError)
    assert str(model_compiler.UnsupportedModelError("SVC")) == "not supported yet: SVC"
