"""Helpers only the tests use (the ones bench shares live in bench/harness/)."""
