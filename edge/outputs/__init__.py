"""Door and kiosk outputs: ZeroMQ events and control, relays and contacts over GPIO, Wiegand, OSDP."""
