"""config.json as a typed value: the only reader and writer of that file.

config.json holds the resolved `RunConfig` plus four private entries: `_key` (the `RunKey`: config
hash and data fingerprint), `_versions` (the code that trained the folder), `_amp` (what "auto"
precision meant on the driver's machine; outside the key, which keeps what was asked for) and
`_version_changes` (every `--allow-version-change` the folder went through). Folders of every
covbench version are read: a missing private entry is None (or empty), the file format is
unchanged, and `from_dict(to_dict())` is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from covbench.config import RunConfig
from covbench.errors import DamagedFile
from covbench.folder.io import read_json, write_json
from covbench.folder.key import RunKey
from covbench.folder.layout import RunFolder
from covbench.folder.manifest import now_iso

PRIVATE = ("_key", "_versions", "_amp", "_version_changes")


@dataclass(frozen=True)
class StoredConfig:
    config: RunConfig
    key: RunKey | None = None  # None only in a folder written before the key was stored
    versions: dict[str, str] | None = None  # None: written before versions were recorded
    amp: dict[str, str] | None = None  # {"requested", "resolved", "device"} (training.loop.local_amp)
    version_changes: list[dict[str, Any]] = field(default_factory=list)  # {"at", "from", "to"} each
    settings: dict[str, Any] = field(default_factory=dict, compare=False)  # the public entries as read

    @classmethod
    def from_dict(cls, data: Any, path: Path | str = "config.json") -> StoredConfig:
        """The stored form; anything that is not a covbench configuration raises DamagedFile."""
        if not isinstance(data, dict):
            raise DamagedFile(path, f"not a covbench configuration: a JSON {type(data).__name__}")
        settings = {k: v for k, v in data.items() if not k.startswith("_")}
        try:
            config = RunConfig.from_dict(settings)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise DamagedFile(path, f"not a covbench configuration: {exc}") from None
        key = RunKey.parse(data["_key"]) if data.get("_key") else None
        versions = data.get("_versions") if isinstance(data.get("_versions"), dict) else None
        amp = data.get("_amp") if isinstance(data.get("_amp"), dict) else None
        changes = [c for c in data.get("_version_changes") or [] if isinstance(c, dict)]
        return cls(config, key, versions, amp, changes, settings)

    def to_dict(self) -> dict[str, Any]:
        private = {
            "_key": str(self.key) if self.key else None,
            "_versions": self.versions,
            "_amp": self.amp,
            "_version_changes": self.version_changes or None,
        }
        return {**self.config.to_dict(), **{k: v for k, v in private.items() if v is not None}}

    def version_diff(self, current: dict[str, str]) -> dict[str, tuple[Any, Any]]:
        """{distribution: (stored version, current version)} for each that differs; a folder written
        before versions were recorded has nothing to compare."""
        if not self.versions:
            return {}
        return {
            name: (self.versions.get(name), current.get(name))
            for name in sorted(set(self.versions) | set(current))
            if self.versions.get(name) != current.get(name)
        }

    def continued(
        self, config: RunConfig, key: RunKey, versions: dict[str, str], amp: dict[str, str] | None
    ) -> StoredConfig:
        """What this session writes: its configuration, key, versions and precision, and the
        folder's version history with this session's change (if any) appended."""
        history = list(self.version_changes)
        changes = self.version_diff(versions)
        if changes:
            history.append(
                {
                    "at": now_iso(),
                    "from": {name: old for name, (old, _) in changes.items()},
                    "to": {name: new for name, (_, new) in changes.items()},
                }
            )
        return replace(self, config=config, key=key, versions=versions, amp=amp, version_changes=history)

    @classmethod
    def new(cls, config: RunConfig) -> StoredConfig:
        """The stored form of a folder that has none yet."""
        return cls(config)

    def write(self, run_dir: Path) -> None:
        write_json(RunFolder(run_dir).config, self.to_dict())


def read_stored_config(run_dir: Path) -> StoredConfig | None:
    """A run folder's config.json; None when there is none. One that is not JSON, or not a
    covbench configuration, raises DamagedFile."""
    path = RunFolder(run_dir).config
    if not path.exists():
        return None
    return StoredConfig.from_dict(read_json(path), path)
