"""Escalation: the signals that a customer needs a person, the queue, routing and the handoff package."""
