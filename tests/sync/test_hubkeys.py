"""The device's hub keyring (sync.hubkeys): rotations chained in any order, revocations kept for
good (even against the config file), a damaged keyring refused naming the file."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.errors import ConfigError
from edge.identity import raw_public
from sync import protocol, signing
from sync.hubkeys import KEYRING_FILE, ROTATION_DOMAIN, HubKeyring, RevokedKeyError, UntrustedSignerError
from sync.protocol import SchemaError, SignatureError


def _rotation(signer: Ed25519PrivateKey, new: Ed25519PrivateKey, revoke: tuple[str, ...] = ()) -> bytes:
    message = {"v": 1, "type": "key_rotation", "new_key": raw_public(new.public_key()).hex(), "new_key_id": signing.key_id(new.public_key()),
               "revoke": list(revoke), "created": int(time.time())}
    return protocol.encode(signing.sign(message, ROTATION_DOMAIN, signer))


def _id(key: Ed25519PrivateKey) -> str:
    return signing.key_id(key.public_key())


def test_device_away_through_two_rotations_applies_them_in_any_order(tmp_path: Path) -> None:
    k1, k2, k3 = (Ed25519PrivateKey.generate() for _ in range(3))
    ring = HubKeyring.open(tmp_path, k1.public_key())
    with pytest.raises(UntrustedSignerError):  # the retained second rotation arrives first: held
        ring.receive(_rotation(k2, k3, (_id(k1),)))
    applied = ring.receive(_rotation(k1, k2))
    assert [r.new_key_id for r in applied] == [_id(k2), _id(k3)] and applied[1].revoked == (_id(k1),)
    assert set(ring) == {_id(k2), _id(k3)}
    with pytest.raises(UntrustedSignerError, match="revoked"):  # k1 is revoked now: its messages are refused
        ring.receive(_rotation(k1, k2))
    reopened = HubKeyring.open(tmp_path, k1.public_key())
    assert set(reopened) == {_id(k2), _id(k3)} and _id(k1) in reopened.revoked()
    assert (tmp_path / KEYRING_FILE).stat().st_mode & 0o777 == 0o600


def test_revoked_key_is_never_trusted_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ring = HubKeyring.open(tmp_path, k1.public_key())
    ring.receive(_rotation(k1, k2, (_id(k1),)))
    with pytest.raises(UntrustedSignerError, match="revoked"):  # the old key cannot sign anything any more
        ring.receive(_rotation(k1, Ed25519PrivateKey.generate()))
    with pytest.raises(RevokedKeyError):  # nor be brought back by the current key
        ring.receive(_rotation(k2, k1))
    with caplog.at_level(logging.ERROR):
        again = HubKeyring.open(tmp_path, k1.public_key())  # the config still names the revoked key
    assert "revoked" in caplog.text and _id(k1) in caplog.text and set(again) == {_id(k2)}
    (tmp_path / "other").mkdir()
    only_revoked = HubKeyring.open(tmp_path / "other", k1.public_key())
    only_revoked.receive(_rotation(k1, k2, (_id(k1),)))
    (tmp_path / "other" / KEYRING_FILE).write_text((tmp_path / "other" / KEYRING_FILE).read_text().replace(_id(k2), "0" * 16))
    with pytest.raises(ConfigError, match="hub keyring"):  # an edited file is refused, naming it
        HubKeyring.open(tmp_path / "other", k1.public_key())


def test_bad_rotations_are_refused_and_change_nothing(tmp_path: Path) -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ring = HubKeyring.open(tmp_path, k1.public_key())
    good = protocol.decode(_rotation(k1, k2), "key_rotation")
    with pytest.raises(SignatureError):  # altered after signing
        ring.receive(protocol.encode({**good, "revoke": [_id(k1)]}))
    with pytest.raises(SchemaError, match="not the id"):  # a key id that is not the key's
        other = Ed25519PrivateKey.generate()
        ring.receive(protocol.encode(signing.sign({**{k: v for k, v in good.items() if k not in ("sig", "key_id")}, "new_key_id": _id(other)},
                                                  ROTATION_DOMAIN, k1)))
    with pytest.raises(SignatureError):  # a bundle's signature domain is not a rotation's
        ring.receive(protocol.encode(signing.sign({k: v for k, v in good.items() if k not in ("sig", "key_id")}, "facegate/v1/bundle", k1)))
    assert set(ring) == {_id(k1)} and ring.revoked() == {}
