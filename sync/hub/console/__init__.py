"""The hub console: the admin's browser side of `facegate hub serve` (docs/hub.md, Console)."""
