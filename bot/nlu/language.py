"""Language detection for Chinese and English, with mixed text handled.

The rule lives in `knowledge_index.language`, where the escalation's sentiment scorer (which may not
import ``bot``) reads it too; this module keeps the bot's own import path.
"""

from __future__ import annotations

from knowledge_index.language import LanguageGuess, detect_language

__all__ = ["LanguageGuess", "detect_language"]
