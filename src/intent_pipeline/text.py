"""What "the same text" means everywhere: training dedup, capture dedup, the server's prediction cache."""

from __future__ import annotations

import unicodedata


def normalise_text(text: str) -> str:
    """Unicode NFC, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def dedup_key(text: str) -> str:
    """The identity of a text for duplicate detection: normalised and casefolded."""
    return normalise_text(text).casefold()
