"""Issue 18: every attack on the device <-> hub path, reproduced against real processes (mosquitto,
`facegate hub serve`, `facegate run`) and shown refused, audited and harmless. One module per
class of hole: uploads (tests/hub/test_upload_trust.py), hub robustness, control messages and
audit anchors, keys and sequences, broker access."""
