"""Small assertion helpers shared by the test modules."""

import re

import pytest


def raises_exactly(exc, message):
    """``pytest.raises`` that checks the whole message, not a regular-expression search in it."""
    return pytest.raises(exc, match=f"^{re.escape(message)}$")
