"""Delivery: from the outbox to the recipient's MX (SPEC §7)."""
