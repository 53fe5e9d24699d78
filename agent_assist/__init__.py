"""Help for agents: conversation summaries and suggested replies."""
