"""The wire error codes: one enumeration that every exception with a wire code draws from."""

from protocols import codes, trust
from protocols.codes import ErrorCode, chunk_error, chunk_error_code


def test_every_trust_error_code_is_a_verification_code() -> None:
    classes = [trust.VerificationError, *trust.VerificationError.__subclasses__()]
    # `rollback` is retired (nothing raises it any more) but keeps its meaning: a verification refusal
    assert {cls.code for cls in classes} == codes.VERIFICATION_CODES - {ErrorCode.ROLLBACK}
    assert all(isinstance(cls.code, ErrorCode) for cls in classes)


def test_codes_are_unique_plain_strings() -> None:
    values = [code.value for code in ErrorCode]
    assert len(values) == len(set(values))
    assert all(v == v.lower() and " " not in v for v in values)
    assert ErrorCode.ROLLBACK == "rollback"


def test_chunk_errors_read_back_their_code() -> None:
    text = chunk_error(ErrorCode.NOT_ENTITLED, "artifact abc...")
    assert text == "not_entitled: artifact abc..."
    assert chunk_error_code(text) == ErrorCode.NOT_ENTITLED
    assert chunk_error_code("") == ""
