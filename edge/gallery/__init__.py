"""The encrypted on-device gallery: store, records, keys, crypto, search index, snapshot, sync apply, enrollment."""
