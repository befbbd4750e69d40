"""Bounds on what callers may write: device ids, label selectors, list lengths, text without NUL.

Request schemas use these types so that an unusable value is refused with 422 before any query runs:
PostgreSQL cannot store NUL in text (it answered with HTTP 500), and an unbounded id list kept a
transaction open for minutes.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from cloud.errors import InvalidRequestError

# Explicit targets per deployment. A fleet in the thousands fits; larger rollouts select by label. At this
# size planning stays in seconds; the 1,000,000-id request it guards against ran 4.5 minutes.
MAX_DEPLOYMENT_DEVICES = 10_000
MAX_SELECTOR_LABELS = 16  # key=value pairs per label selector

# Selector keys and values follow the device-id rules (protocols.topics): 1-64 of A-Z a-z 0-9 _ . -,
# starting with a letter or digit. Devices may report other labels; selectors can only name these.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit"


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL (\\x00)")
    return value


Text = Annotated[str, StringConstraints(max_length=256), AfterValidator(no_nul)]  # names, versions, ...
DeviceId = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
LabelName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


def check_selector(labels: dict[str, str]) -> dict[str, str]:
    """labels unchanged, or InvalidRequestError (422) naming the first key or value that breaks the rules."""
    if len(labels) > MAX_SELECTOR_LABELS:
        raise InvalidRequestError(f"a label selector has at most {MAX_SELECTOR_LABELS} labels, not {len(labels)}")
    for key, value in labels.items():
        for part in (key, value):
            if not _NAME.match(part):
                raise InvalidRequestError(f"label {key!r}={value!r}: keys and values are {NAME_RULE}")
    return labels


def _selector(labels: dict[str, str]) -> dict[str, str]:
    try:
        return check_selector(labels)
    except InvalidRequestError as exc:
        raise ValueError(str(exc)) from None  # pydantic reports ValueErrors as validation errors (422)


LabelSelector = Annotated[dict[str, str], AfterValidator(_selector)]
