"""Reliability harness: faults, rolling restarts and a soak under a steady mix, with a ledger."""
