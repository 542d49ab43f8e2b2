"""The device's hash-chained, signed audit journal."""
