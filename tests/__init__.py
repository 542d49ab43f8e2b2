"""The test suite; one package per package of the code (docs/architecture.md)."""
