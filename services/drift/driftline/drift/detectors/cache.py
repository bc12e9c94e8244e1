"""Thresholds of online detectors, kept on disk per configuration.

Online detectors find their thresholds by simulating streams without drift, which
takes seconds to tens of seconds. The thresholds depend only on the configuration
(reference size, window sizes, ERT, number of features) and, for some statistics, on
the reference data itself; both go into the cache key. A monitor that restarts, or
a reference that comes back with a rollback, then sets up in milliseconds.

Entries are `.npz` files (no pickle), written to a temporary name and renamed so a
reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def cache_key(**parts: Any) -> str:
    """A stable key for a configuration: JSON of the parts (arrays by their hash)."""
    plain = {k: _plain(v) for k, v in sorted(parts.items())}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:32]


def array_digest(array: np.ndarray[Any, Any]) -> str:
    data = np.ascontiguousarray(array)
    return hashlib.sha256(data.tobytes() + str((data.dtype, data.shape)).encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return array_digest(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class ThresholdCache:
    """A directory of threshold arrays; `None` as directory turns caching off."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def get(self, kind: str, key: str) -> dict[str, np.ndarray[Any, Any]] | None:
        if self.directory is None:
            return None
        path = self.directory / f"{kind}-{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a damaged entry is recomputed, not fatal
            log.warning("ignoring unreadable threshold cache entry %s: %s", path.name, exc)
            return None

    def put(self, kind: str, key: str, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.directory / f"{kind}-{key}.npz")
        except OSError as exc:  # a read-only disk costs set-up time, nothing else
            log.warning("cannot write threshold cache in %s: %s", self.directory, exc)
