"""Regular-expression check for values that end up in Postfix regexp tables.

Postfix compiles its regexp tables with the C library's POSIX extended regular
expressions (``regcomp`` with REG_EXTENDED | REG_ICASE), not Python's dialect: ``(?i)``
is an error there (Postfix then ignores the whole rule), and glibc reads ``\\d`` as a
plain ``d``, so such a rule silently never matches. Both are refused here, with the
POSIX spelling to use instead, and what remains is compiled by the C library itself
where the controller has one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import warnings

# The same values in glibc, musl and the BSDs.
REG_EXTENDED = 1
REG_ICASE = 2
# Escapes that mean a class or an anchor in Python but not in POSIX, with their spelling.
POSIX_SPELLING = {"d": "[0-9]", "D": "[^0-9]", "s": "[[:space:]]", "S": "[^[:space:]]",
                  "w": "[[:alnum:]_]", "W": "[^[:alnum:]_]", "b": "a word boundary (none)",
                  "A": "^", "Z": "$", "z": "$"}


def _libc_error(pattern: str) -> str:
    """The C library's complaint about ``pattern`` as a POSIX extended regular expression."""
    name = ctypes.util.find_library("c")
    if not name:
        return ""
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return ""
    compiled = ctypes.create_string_buffer(1024)  # larger than any libc's regex_t
    code = libc.regcomp(compiled, pattern.encode(), REG_EXTENDED | REG_ICASE)
    if code == 0:
        libc.regfree(compiled)
        return ""
    message = ctypes.create_string_buffer(256)
    libc.regerror(code, compiled, message, len(message))
    return message.value.decode(errors="replace") or f"regcomp error {code}"


def invalid_regex(pattern: object) -> str:
    """Why ``pattern`` is not a POSIX extended regular expression that means what it says
    in Postfix; empty when it is."""
    text = str(pattern)
    if "(?" in text:
        return (f"{text}: (?…) groups are Python's, Postfix's POSIX regular expressions have"
                " none (it matches without regard to case already)")
    escape = re.search(r"\\([A-Za-z0-9])", text)
    if escape:
        letter = escape.group(1)
        instead = POSIX_SPELLING.get(letter, f"{letter} without the backslash")
        return (f"{text}: \\{letter} is not POSIX (Postfix would read it as a plain "
                f"{letter}); write {instead}")
    try:
        with warnings.catch_warnings():  # POSIX classes ([[:space:]]) look nested to Python
            warnings.simplefilter("ignore", FutureWarning)
            re.compile(text)
    except re.error as error:
        return f"{text}: {error}"
    problem = _libc_error(text)
    return f"{text}: {problem}" if problem else ""


class FilterModule:
    def filters(self) -> dict:
        return {"invalid_regex": invalid_regex}
