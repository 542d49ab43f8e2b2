"""Harness code shared by the benchmarks and the tests: a real mosquitto (`mqtt_broker`), the hub's
side of the sync protocol (`hub_client`), synthetic persons and sync devices (`sync_helpers`).
Benchmarks import nothing from the test suite; tests import these from here."""
