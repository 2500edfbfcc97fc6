"""Intracranial hemorrhage (ICH) model for non-contrast head CT."""
