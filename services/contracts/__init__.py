"""Payload contracts shared by the travel agents (the runtime knows none of them)."""
