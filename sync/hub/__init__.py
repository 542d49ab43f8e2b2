"""The hub: its MQTT service, store (SQLite/PostgreSQL), status page and admin verbs."""
