"""Response templates: the ``{placeholders}`` of a knowledge base's responses, and filling them.

The bot (its answers) and agent assist (its suggested replies) read templates through this module,
so both agree on what a template needs and on a broken one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

# What a placeholder looks like to a reader of the text (not to the parser): used to judge the
# words of a template without its placeholders.
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _parts(template: str) -> list[tuple[str, str | None]] | None:
    """``(literal, placeholder name)`` pairs of ``template``, or None if a brace is unbalanced."""
    try:
        return [(literal, name) for literal, name, _, _ in string.Formatter().parse(template)]
    except ValueError:  # an unclosed "{" or a lone "}"
        return None


def placeholders(template: str) -> list[str] | None:
    """The named placeholders of a response template (``{order_number}``), each once, in order.

    Returns:
        The names, or None for a broken template (an unclosed ``{`` or a lone ``}``). A broken
        template cannot be filled safely: sent, it would show the customer half a placeholder, so
        callers treat it as a response they cannot give.
    """
    parts = _parts(template)
    if parts is None:
        return None
    return list(dict.fromkeys(name for _, name in parts if name))


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced by its value, ``""`` for one without a value.

    Values are inserted as they are, never formatted, so a customer's "{x}" stays text. A broken
    template comes back unchanged: check `placeholders` first where that must not be sent.
    """
    parts = _parts(template)
    if parts is None:
        return template
    return "".join(literal + (str(values.get(name, "")) if name else "") for literal, name in parts)


def without_placeholders(text: str) -> str:
    """``text`` with each ``{...}`` replaced by a space, to judge the words around the placeholders."""
    return _PLACEHOLDER.sub(" ", text)
