"""Opening the gallery the way the config says: its folder, its key, its embedder, its threshold.

Shared by `facegate run` (at start and on every reload) and the `gallery` verbs, so they can
never disagree about which key opens a gallery or which threshold it answers at.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge.config import Config
from edge.gallery.keys import data_dir_for, load_key
from edge.gallery.search import Gallery
from edge.gallery.thresholds import threshold_policy
from edge.perception.embed import embedder_spec
from edge.perception.faces import embedder_model_name
from edge.perception.modelstore import ModelStore


def open_gallery(data_dir: Path | None, cfg: Config, store: ModelStore, create: bool, warn: Callable[[str], None] = lambda _m: None) -> Gallery:
    """The gallery in `data_dir` (None: `[gallery] data_dir` and its defaults), with the search
    index of the configured embedder and the thresholds `[match]` asks for (ConfigError when the
    gallery is too large for `stranger_accept_rate`)."""
    folder = data_dir_for(data_dir, cfg)
    key = load_key(folder, cfg, create=create, warn=warn)
    policy = threshold_policy(cfg, store)
    dim = embedder_spec(cfg.embed.model).dim
    gallery = Gallery.open(folder, key.kek, embedder_model_name(cfg), dim, policy, create=create, snapshot=cfg.gallery.index_snapshot)
    gallery.negative_margin = cfg.match.negative_margin  # "not this person": edge/gallery/negatives.py
    return gallery
