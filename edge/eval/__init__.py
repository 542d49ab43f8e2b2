"""Evaluations: LFW verification, liveness (PAD) metrics, and their reports."""
