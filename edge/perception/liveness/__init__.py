"""Liveness: the passive CNN, the multi-frame cues and the challenge, fused per track."""
