"""ModelRegistry: finds `<models_dir>/<name>/<version>/metadata.json`, loads each version, looks them up.

The loaded models live in an immutable `RegistrySnapshot`. Loading builds a complete new snapshot and then
swaps it in with one assignment, so a request always sees one consistent set of models and a reload (build a
new snapshot, assign it) never exposes a half-loaded state. A version that fails to load is recorded with its
reason in the snapshot and does not take the others down.

`reload()` rescans the repository into a new snapshot: versions whose files did not change keep their
loaded sessions, changed and new ones are loaded, removed ones dropped. A changed version whose new files
fail to load keeps serving its previous load (reported as `kept`). Requests hold the model object they
started with, so a request in flight finishes on the sessions it began on, whatever a reload swaps in.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from service.contract import METADATA_FILE, ModelMetadata
from service.core.runtime import ModelLoadError, OnnxModel
from service.errors import ModelNotFoundError, ModelUnavailableError

__all__ = ["LoadFailure", "ModelRegistry", "RegistrySnapshot", "ReloadReport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadFailure:
    """A model version that did not load, and why."""

    name: str
    version: int | None
    """None when the directory name is not a version number."""
    directory: Path
    error: str
    metadata: ModelMetadata | None = None
    """The metadata, when it was valid and something later failed."""


@dataclass(frozen=True)
class RegistrySnapshot:
    """An immutable view of the repository: loaded models by name and version, and the failures."""

    models_dir: Path
    models: Mapping[str, Mapping[int, OnnxModel]] = field(default_factory=dict)
    failures: tuple[LoadFailure, ...] = ()
    fingerprints: Mapping[tuple[str, int], str] = field(default_factory=dict)
    """(name, version) -> a fingerprint of the files each loaded version came from."""
    stale: tuple[LoadFailure, ...] = ()
    """Versions whose files changed and failed to load, still served from their previous load."""

    def names(self) -> list[str]:
        """Every model name seen, loaded or failed, sorted."""
        return sorted(set(self.models) | {f.name for f in self.failures})

    def versions(self, name: str) -> list[int]:
        """Loaded versions of `name`, ascending."""
        return sorted(self.models.get(name, {}))

    def get(self, name: str, version: int | None = None) -> OnnxModel:
        """The model `name` at `version` (default: the latest loaded version)."""
        loaded = self.models.get(name)
        if loaded is None or (version is not None and version not in loaded):
            for f in self.failures:
                if f.name == name and (version is None or f.version == version):
                    raise ModelUnavailableError(f"model {name} version {f.version} failed to load: {f.error}")
            if loaded is None:
                available = ", ".join(self.names()) or "none"
                raise ModelNotFoundError(f"unknown model {name!r}; available models: {available}")
            raise ModelNotFoundError(
                f"model {name!r} has no version {version}; available versions: "
                + ", ".join(str(v) for v in sorted(loaded))
            )
        return loaded[version if version is not None else max(loaded)]

    def all_models(self) -> list[OnnxModel]:
        """Every loaded model version, by name then version."""
        return [self.models[n][v] for n in sorted(self.models) for v in sorted(self.models[n])]

    def problems(self) -> list[str]:
        """Why the service is not ready, one line each; empty when every model is loaded and warmed."""
        lines = [f"{f.name} version {f.version}: {f.error}" for f in self.failures]
        lines += [
            f"{m.metadata.name} version {m.metadata.version}: not warmed up"
            for m in self.all_models()
            if not m.warmed
        ]
        if not self.models and not self.failures:
            lines.append(
                f"no models found under {self.models_dir} (expected <name>/<version>/{METADATA_FILE})"
            )
        return lines


@dataclass(frozen=True)
class ReloadReport:
    """What a reload changed, as `name/version` strings, and what failed."""

    added: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: list[str]
    kept: list[LoadFailure]
    """Changed versions whose new files failed to load; their previous load keeps serving."""
    failed: list[LoadFailure]
    """Versions that failed to load and have nothing to fall back on."""
    snapshot: RegistrySnapshot

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


class ModelRegistry:
    """Loads the model repository into snapshots and answers lookups from the current one."""

    def __init__(
        self,
        models_dir: Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        warm_up: bool = True,
    ) -> None:
        self.models_dir = models_dir
        self.providers = list(providers) if providers else None
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.warm_up = warm_up
        self._snapshot = RegistrySnapshot(models_dir)
        self._reload_lock = threading.Lock()

    @property
    def snapshot(self) -> RegistrySnapshot:
        """The current snapshot; hold on to it for the length of a request."""
        return self._snapshot

    def get(self, name: str, version: int | None = None) -> OnnxModel:
        return self._snapshot.get(name, version)

    def load(self) -> RegistrySnapshot:
        """Scan and load the whole repository into a new snapshot, then swap it in."""
        snapshot = self.build_snapshot()
        self._snapshot = snapshot
        return snapshot

    def reload(self) -> ReloadReport:
        """Rescan the repository, reusing unchanged versions, and swap the new snapshot in (one at a time)."""
        with self._reload_lock:
            previous = self._snapshot
            snapshot = self.build_snapshot(previous)
            self._snapshot = snapshot
        before = {(n, v) for n in previous.models for v in previous.models[n]}
        after = {(n, v) for n in snapshot.models for v in snapshot.models[n]}
        stale = {(f.name, f.version) for f in snapshot.stale}

        def names(keys: set[tuple[str, int]]) -> list[str]:
            return [f"{n}/{v}" for n, v in sorted(keys)]

        updated = {
            k
            for k in before & after
            if k not in stale and snapshot.models[k[0]][k[1]] is not previous.models[k[0]][k[1]]
        }
        report = ReloadReport(
            added=names(after - before),
            updated=names(updated),
            removed=names(before - after),
            unchanged=names((before & after) - updated - stale),
            kept=list(snapshot.stale),
            failed=list(snapshot.failures),
            snapshot=snapshot,
        )
        logger.info(
            "reloaded %s: added %s, updated %s, removed %s, kept after a failed load %s, failed %s",
            self.models_dir,
            report.added,
            report.updated,
            report.removed,
            [f"{f.name}/{f.version}" for f in report.kept],
            [f"{f.name}/{f.version}" for f in report.failed],
        )
        return report

    def build_snapshot(self, previous: RegistrySnapshot | None = None) -> RegistrySnapshot:
        """Scan and load the repository without touching the current snapshot.

        With `previous`, versions whose files are unchanged reuse its loaded models, and a version whose new
        files fail to load keeps its previous model (listed in `stale`).
        """
        models: dict[str, dict[int, OnnxModel]] = {}
        fingerprints: dict[tuple[str, int], str] = {}
        failures: list[LoadFailure] = []
        stale: list[LoadFailure] = []
        for directory in self._version_dirs():
            name = directory.parent.name
            version = int(directory.name) if directory.name.isdigit() else None
            fingerprint = _fingerprint(directory)
            old = None
            if previous is not None and version is not None:
                old = previous.models.get(name, {}).get(version)
                if old is not None and previous.fingerprints.get((name, version)) == fingerprint:
                    models.setdefault(name, {})[version] = old
                    fingerprints[(name, version)] = fingerprint
                    continue
            try:
                model = self.load_version(directory)
            except ModelLoadError as exc:
                metadata = _try_metadata(directory)
                failure = LoadFailure(name, version, directory, str(exc), metadata)
                if old is not None and version is not None and previous is not None:
                    logger.error(
                        "model %s version %s: the new files failed to load, still serving the previous "
                        "load: %s",
                        name,
                        version,
                        exc,
                    )
                    models.setdefault(name, {})[version] = old
                    fingerprints[(name, version)] = previous.fingerprints.get((name, version), "")
                    stale.append(failure)
                    continue
                logger.error("model %s version %s failed to load: %s", name, directory.name, exc)
                failures.append(failure)
                continue
            models.setdefault(name, {})[model.metadata.version] = model
            fingerprints[(name, model.metadata.version)] = fingerprint
            logger.info(
                "loaded model %s version %s on %s", name, model.metadata.version, model.providers["model"]
            )
        frozen = MappingProxyType({n: MappingProxyType(v) for n, v in models.items()})
        return RegistrySnapshot(
            self.models_dir, frozen, tuple(failures), MappingProxyType(fingerprints), tuple(stale)
        )

    def load_version(self, directory: Path) -> OnnxModel:
        """Load and warm one `<name>/<version>` directory, checking it agrees with its path."""
        if not directory.name.isdigit() or int(directory.name) < 1:
            raise ModelLoadError(f"version directory {directory.name!r} is not a positive integer")
        model = OnnxModel.load(
            directory,
            providers=self.providers,
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
        )
        meta = model.metadata
        if meta.name != directory.parent.name or meta.version != int(directory.name):
            raise ModelLoadError(
                f"metadata says {meta.name} version {meta.version} but the files are in "
                f"{directory.parent.name}/{directory.name}"
            )
        if self.warm_up:
            model.warm_up()
        return model

    def _version_dirs(self) -> list[Path]:
        if not self.models_dir.is_dir():
            return []
        found = []
        for name_dir in sorted(
            p for p in self.models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
                if (version_dir / METADATA_FILE).is_file():
                    found.append(version_dir)
        return found


def _fingerprint(directory: Path) -> str:
    """Changes whenever a file of the version directory is replaced, rewritten, added or removed."""
    digest = hashlib.sha256()
    try:
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            st = path.stat()
            digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
        digest.update((directory / METADATA_FILE).read_bytes())
    except OSError as exc:  # a file vanished mid-scan: never equal to a real fingerprint, so it reloads
        return f"unreadable: {exc}"
    return digest.hexdigest()


def _try_metadata(directory: Path) -> ModelMetadata | None:
    try:
        return ModelMetadata.read(directory)
    except Exception:  # the failure itself is already recorded
        return None
