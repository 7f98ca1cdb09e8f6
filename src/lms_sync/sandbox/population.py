"""One seeded population of people shared by every fake vendor.

The same person appears in several vendors under vendor-specific ids, with the
same email (sometimes differently cased or padded, as real exports are) and the
same HR id, so identity matching has something real to do.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

FIRST = ["Jane", "John", "Aino", "Björn", "Zoë", "José", "Łukasz", "Søren", "Chloé", "Mei",
         "Ahmed", "Priya", "Olga", "Kenji", "Fatima", "Liam", "Noah", "Emma", "Ana", "Ümit"]
LAST = ["Doe", "Smith", "Virtanen", "Øverli", "Müller", "García", "Kowalski", "Nakamura",
        "O'Brien", "Dubois", "Rossi", "Novák", "Jensen", "Silva", "Çelik", "Andersson"]
DOMAIN = "example.com"

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Person:
    index: int
    first_name: str
    last_name: str
    email: str
    hr_id: str

    def key(self, vendor: str) -> int:
        """A stable number for this person in one vendor (for ids and membership)."""
        digest = hashlib.blake2b(f"{vendor}:{self.index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def vendor_email(self, vendor: str) -> str:
        """The email as this vendor spells it (case and whitespace vary)."""
        k = self.key(vendor) % 10
        if k == 0:
            return self.email.upper()
        if k == 1:
            return f" {self.email.title()} "
        return self.email


class Population:
    """``size`` people; each vendor sees a deterministic subset of them."""

    # share of the population each vendor has (absorb has everyone)
    SHARE = {"absorb": 1.0, "ispring": 0.6, "udemy": 0.5, "sessions": 0.4, "academy": 0.7}

    def __init__(self, size: int = 200, seed: int = 7) -> None:
        self.size = size
        self.seed = seed

    @cached_property
    def people(self) -> list[Person]:
        rng = random.Random(self.seed)
        out = []
        for i in range(self.size):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            local = f"{_ascii(first)}.{_ascii(last)}.{i}".lower()
            out.append(Person(i, first, last, f"{local}@{DOMAIN}", f"E{100000 + i}"))
        return out

    def members(self, vendor: str) -> list[Person]:
        share = self.SHARE.get(vendor, 1.0)
        return [p for p in self.people if share >= 1 or (p.key(vendor) % 1000) < share * 1000]

    def rng(self, vendor: str) -> random.Random:
        return random.Random(f"{self.seed}:{vendor}")

    def when(self, rng: random.Random, days: int = 300) -> datetime:
        """A random moment in the year before the sandbox's fixed 'now'."""
        return EPOCH + timedelta(seconds=rng.randrange(days * 86400))


def _ascii(text: str) -> str:
    table = str.maketrans("öøüéçłæåäñóÜÖØ", "oouecleaanoUOO")
    return "".join(ch for ch in text.translate(table) if ch.isalnum())
