"""Card id → person, and the people who have a PIN: what a card or keypad at a door looks up.

Cards and PIN hashes live inside the sealed profiles only. The gallery finds a card's person
through this in-memory map, built from every profile the first time a door asks (and again after
each reopen: a reload, a hub bundle). A keyed HMAC of the card number as an indexed column would
avoid decrypting the profiles, but needs a schema migration, and the hub could not compute a
device's tag key for the persons it sends, so every applied bundle would have to re-tag them;
decrypting the profiles once per open costs ~20 us a person and only galleries behind a
credential door pay it. Nothing here is written to disk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from edge.errors import GalleryError
from edge.gallery.pins import pin_matches
from edge.gallery.records import PersonProfile, PersonRecord

_LOG = logging.getLogger(__name__)


class CredentialIndex:
    def __init__(self, persons: Iterable[PersonRecord]) -> None:
        self._cards: dict[int, int] = {}
        self._pins: dict[int, str] = {}  # person id → PIN hash
        self._ambiguous: set[int] = set()  # cards two persons claim (only a merge of bundles can do that)
        self._held: dict[int, tuple[int, ...]] = {}  # person id → their cards
        for record in persons:
            self.add(record)

    def add(self, record: PersonRecord) -> None:
        self.remove(record.id)
        self._held[record.id] = record.profile.cards
        for card in record.profile.cards:
            owner = self._cards.get(card)
            if owner is not None and owner != record.id or card in self._ambiguous:
                # Opening the door for either would be a guess: the card opens for nobody until fixed.
                _LOG.warning("a card is enrolled for persons %s and %s: it is refused until one of them is re-enrolled", owner, record.id)
                self._ambiguous.add(card)
                self._cards.pop(card, None)
            else:
                self._cards[card] = record.id
        if record.profile.pin_hash:
            self._pins[record.id] = record.profile.pin_hash

    def remove(self, person_id: int) -> None:
        for card in self._held.pop(person_id, ()):
            if self._cards.get(card) == person_id:
                del self._cards[card]
        self._pins.pop(person_id, None)

    def person_by_card(self, card: int) -> int | None:
        return self._cards.get(card)

    def persons_by_pin(self, pin: str) -> tuple[int, ...]:
        """Every person whose PIN this is: one salted hash per PIN holder (pins.py says the cost)."""
        return tuple(pid for pid, stored in self._pins.items() if pin_matches(pin, stored))

    def refuse_taken_cards(self, profile: PersonProfile, person_id: int | None) -> None:
        """GalleryError when a card of `profile` belongs to someone other than `person_id`."""
        for card in profile.cards:
            owner = self._cards.get(card)
            if (owner is not None and owner != person_id) or card in self._ambiguous:
                raise GalleryError(f"not enrolled: card {card >> 16}:{card & 0xFFFF} already belongs to another person; remove it from them first")

    def __len__(self) -> int:
        return len(self._cards)
