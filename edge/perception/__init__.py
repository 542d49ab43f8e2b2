"""Perception: detect, landmarks, align, quality, embed, the inference runtimes, the model store, liveness."""
