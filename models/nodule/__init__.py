"""Lung nodule detection and measurement model for chest CT."""
