"""The video runtime: capture, track, decide, pipeline, annotate."""
