"""Regular-expression check for values that end up in Postfix regexp tables."""

from __future__ import annotations

import re


def invalid_regex(pattern: object) -> str:
    """Why ``pattern`` is not a usable regular expression; empty when it is."""
    try:
        re.compile(str(pattern))
    except re.error as error:
        return f"{pattern}: {error}"
    return ""


class FilterModule:
    def filters(self) -> dict:
        return {"qqrelay_invalid_regex": invalid_regex}
