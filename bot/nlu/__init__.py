"""Natural-language understanding: language, intent, entities."""
