"""The `facegate` command, one module per verb group."""
