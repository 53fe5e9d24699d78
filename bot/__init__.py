"""Understanding and deciding a bot turn."""
