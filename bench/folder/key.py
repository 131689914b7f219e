"""The run key: which configuration on which data a run folder (and each trial record) holds.

It is stored as one string, `<config hash>-<data fingerprint, 12 hex digits>` (config.json's
`_key`, record.json's `config_key`, every checkpoint), so folders written by any covbench version
stay readable; code that needs one half parses it here instead of splitting strings in place.
"""

from __future__ import annotations

from dataclasses import dataclass

FINGERPRINT_CHARS = 12  # of the data fingerprint, in the key


@dataclass(frozen=True)
class RunKey:
    config_hash: str  # RunConfig.key()
    data_fingerprint: str = ""  # its first FINGERPRINT_CHARS; "" in a key that names none

    @classmethod
    def of(cls, config_hash: str, fingerprint: str) -> RunKey:
        """The key of a configuration on data with this (full) fingerprint."""
        return cls(config_hash, fingerprint[:FINGERPRINT_CHARS])

    @classmethod
    def parse(cls, text: object) -> RunKey:
        """The key a stored string spells; tolerant, as stored keys are read from any folder."""
        config_hash, _, fingerprint = str(text or "").partition("-")
        return cls(config_hash, fingerprint)

    def __str__(self) -> str:
        return f"{self.config_hash}-{self.data_fingerprint}" if self.data_fingerprint else self.config_hash
