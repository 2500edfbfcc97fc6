"""Governance: the hash-chained audit trail (and, later, RBAC, review queue, drift)."""
