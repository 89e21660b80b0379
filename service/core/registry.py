"""ModelRegistry: finds model versions in the repository, loads each, looks them up, hot-reloads them.

Layouts (all read the same way, so a KServe storage initializer's `/mnt/models` works whatever it holds):
- a repository: `<root>/<name>/<version>/metadata.json` (Triton's layout);
- one model: `<root>/<version>/metadata.json`, named by its metadata;
- one version: `<root>/metadata.json`, named and numbered by its metadata.

Versions are canonical positive integers in ASCII (`1`, `12`; not `01`, `1.0`, or digits of other
scripts): any other folder holding a metadata.json, or a version folder without one, is reported as a failed
version and everything else serves. Files and hidden folders at the top are ignored.

The loaded models live in an immutable `RegistrySnapshot`; loading builds a complete new snapshot and swaps
it in with one assignment, so a request sees one consistent set of models. `reload()` rescans: versions whose
files did not change keep their sessions, changed and new ones are loaded, removed ones dropped. Faults never
drop what is loaded: a changed version that fails to load keeps serving its previous load (`kept`), a
folder that cannot be read keeps what it held, and a repository that is missing, unreadable or suddenly
empty keeps serving everything (`fault`); removing a model needs its folder gone from a readable listing.
Error messages name paths relative to the repository root.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from service.contract import METADATA_FILE, ModelMetadata
from service.core.runtime import ModelLoadError, OnnxModel
from service.errors import ModelNotFoundError, ModelUnavailableError

__all__ = [
    "VERSION_PATTERN",
    "LoadFailure",
    "ModelRegistry",
    "RegistrySnapshot",
    "ReloadReport",
    "parse_version",
]

logger = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,9}")
"""A version as written in paths and URLs: ASCII digits, no leading zero."""


def parse_version(text: str) -> int | None:
    """The version `text` names, or None when it is not a canonical positive ASCII integer."""
    return int(text) if VERSION_PATTERN.fullmatch(text) else None


@dataclass(frozen=True)
class LoadFailure:
    """A model version that did not load, and why."""

    name: str
    version: int | None
    """None when the folder name is not a version number."""
    directory: Path
    error: str
    metadata: ModelMetadata | None = None
    """The metadata, when it was valid and something later failed."""

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version if self.version is not None else self.directory.name}"


@dataclass(frozen=True)
class RegistrySnapshot:
    """An immutable view of the repository: loaded models by name and version, and the failures."""

    models_dir: Path
    models: Mapping[str, Mapping[int, OnnxModel]] = field(default_factory=dict)
    failures: tuple[LoadFailure, ...] = ()
    fingerprints: Mapping[tuple[str, int], str] = field(default_factory=dict)
    """(name, version) -> a fingerprint of the files each loaded version came from."""
    stale: tuple[LoadFailure, ...] = ()
    """Versions whose files changed or could not be read, still served from their previous load."""
    fault: str | None = None
    """Why the last scan could not read the repository (everything loaded before stays)."""

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

    def states(self) -> list[tuple[str, str]]:
        """(name/version, state) of every version seen: "ready", "warming" or "failed"."""
        ready = [
            (f"{m.metadata.name}/{m.metadata.version}", "ready" if m.warmed else "warming")
            for m in self.all_models()
        ]
        return ready + [(f.label, "failed") for f in self.failures]

    def problems(self) -> list[str]:
        """Why the service is not ready, one line each, names and states only (details: `failures`)."""
        lines = [f"{label} {state}" for label, state in self.states() if state != "ready"]
        if self.fault is not None:
            lines.append(self.fault)
        elif not self.models and not self.failures:
            lines.append(f"no models found under the model repository (expected <name>/<version>/{METADATA_FILE})")
        return lines


@dataclass(frozen=True)
class ReloadReport:
    """What a reload changed, as `name/version` strings, and what failed."""

    added: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: list[str]
    kept: list[LoadFailure]
    """Changed versions whose new files failed to load, or could not be read; their previous load serves."""
    failed: list[LoadFailure]
    """Versions that failed to load and have nothing to fall back on."""
    fault: str | None
    """Why the repository itself could not be read; then nothing was removed."""
    snapshot: RegistrySnapshot

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


@dataclass(frozen=True)
class _Candidate:
    """A folder that holds, or should hold, one model version."""

    name: str
    version: int | None
    directory: Path
    problem: str | None = None
    """Why it cannot be loaded before even trying (a bad folder name, an unreadable folder)."""


@dataclass
class _Scan:
    candidates: list[_Candidate] = field(default_factory=list)
    unreadable_models: set[str] = field(default_factory=set)
    """Model folders whose listing failed: their loaded versions stay."""
    fault: str | None = None


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
        return _report(previous, snapshot, self.models_dir)

    def build_snapshot(self, previous: RegistrySnapshot | None = None) -> RegistrySnapshot:
        """Scan and load the repository without touching the current snapshot.

        With `previous`, versions whose files are unchanged reuse its loaded models, and a version whose new
        files fail to load (or cannot be read) keeps its previous model (listed in `stale`).
        """
        scan = self._scan()
        if previous is not None and previous.models and scan.fault is None and not scan.candidates:
            scan.fault = "the model repository is empty"
        if scan.fault is not None:
            logger.error("%s; keeping every loaded model version", scan.fault)
            if previous is not None:
                return _replace_fault(previous, scan.fault)
            return RegistrySnapshot(self.models_dir, fault=scan.fault)
        models: dict[str, dict[int, OnnxModel]] = {}
        fingerprints: dict[tuple[str, int], str] = {}
        failures: list[LoadFailure] = []
        stale: list[LoadFailure] = []
        for candidate in scan.candidates:
            self._place(candidate, previous, models, fingerprints, failures, stale)
        if previous is not None:
            for name in scan.unreadable_models:  # a folder we could not list keeps what it held
                for version, model in previous.models.get(name, {}).items():
                    if version not in models.get(name, {}):
                        models.setdefault(name, {})[version] = model
                        fingerprints[(name, version)] = previous.fingerprints.get((name, version), "")
        frozen = MappingProxyType({n: MappingProxyType(v) for n, v in models.items()})
        return RegistrySnapshot(
            self.models_dir, frozen, tuple(failures), MappingProxyType(fingerprints), tuple(stale)
        )

    def _place(
        self,
        candidate: _Candidate,
        previous: RegistrySnapshot | None,
        models: dict[str, dict[int, OnnxModel]],
        fingerprints: dict[tuple[str, int], str],
        failures: list[LoadFailure],
        stale: list[LoadFailure],
    ) -> None:
        """Load one candidate into `models`, or record why not, reusing `previous` where it can."""
        name, version = candidate.name, candidate.version
        old = previous.models.get(name, {}).get(version) if previous and version is not None else None
        problem, fingerprint = candidate.problem, ""
        if problem is None:
            try:
                fingerprint = _fingerprint(candidate.directory)
            except FileNotFoundError:
                problem = f"{self._relative(candidate.directory)} has no {METADATA_FILE}"
            except OSError as exc:
                problem = f"cannot read {self._relative(candidate.directory)}: {exc.strerror or exc}"
        if (
            old is not None
            and previous is not None
            and version is not None
            and problem is None
            and previous.fingerprints.get((name, version)) == fingerprint
        ):
            models.setdefault(name, {})[version] = old
            fingerprints[(name, version)] = fingerprint
            return
        try:
            if problem is not None:
                raise ModelLoadError(problem)
            model = self.load_version(candidate)
        except ModelLoadError as exc:
            message = self._relative_message(str(exc))
            failure = LoadFailure(name, version, candidate.directory, message, _try_metadata(candidate))
            if old is not None and version is not None and previous is not None:
                logger.error(
                    "model %s version %s: still serving the previous load: %s", name, version, message
                )
                models.setdefault(name, {})[version] = old
                fingerprints[(name, version)] = previous.fingerprints.get((name, version), "")
                stale.append(failure)
            else:
                logger.error("model %s failed to load: %s", failure.label, message)
                failures.append(failure)
            return
        models.setdefault(name, {})[model.metadata.version] = model
        fingerprints[(name, model.metadata.version)] = fingerprint
        logger.info(
            "loaded model %s version %s on %s", name, model.metadata.version, model.providers["model"]
        )

    def load_version(self, candidate: _Candidate) -> OnnxModel:
        """Load and warm one version folder, checking it agrees with where it was found."""
        directory = candidate.directory
        model = OnnxModel.load(
            directory,
            providers=self.providers,
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
        )
        meta = model.metadata
        expected = (candidate.name, candidate.version)
        if (meta.name, meta.version) != expected and candidate.version is not None:
            raise ModelLoadError(
                f"metadata says {meta.name} version {meta.version} but the files are in "
                f"{candidate.name}/{candidate.version}"
            )
        if self.warm_up:
            model.warm_up()
        return model

    # --- scanning ------------------------------------------------------------------------------------------

    def _scan(self) -> _Scan:
        scan = _Scan()
        root = self.models_dir
        try:
            entries = _list_dirs(root)
            if (root / METADATA_FILE).is_file():
                meta = _read_metadata_quietly(root)
                if meta is None:
                    scan.candidates.append(_Candidate(root.name, None, root, f"invalid {METADATA_FILE}"))
                else:
                    scan.candidates.append(_Candidate(meta.name, meta.version, root))
                return scan
        except OSError as exc:
            scan.fault = f"cannot read the model repository: {exc.strerror or exc}"
            return scan
        if entries and all(parse_version(e.name) is not None for e in entries):
            meta = next((m for e in entries if (m := _read_metadata_quietly(e)) is not None), None)
            if meta is not None:  # one model's version folders, straight under the root
                scan.candidates += self._versions(meta.name, root, scan)
                return scan
        for model_dir in entries:
            scan.candidates += self._versions(model_dir.name, model_dir, scan)
        return scan

    def _versions(self, name: str, model_dir: Path, scan: _Scan) -> list[_Candidate]:
        try:
            entries = _list_dirs(model_dir, include_files=True)
        except OSError as exc:
            logger.error("cannot read model folder %s: %s", self._relative(model_dir), exc.strerror or exc)
            scan.unreadable_models.add(name)
            return []
        found = []
        for entry in entries:
            version = parse_version(entry.name)
            is_dir = entry.is_dir()
            if version is not None and not is_dir:
                where = self._relative(entry)
                found.append(
                    _Candidate(name, version, entry, f"{where} is a file, expected a version folder")
                )
            elif version is None and is_dir and (entry / METADATA_FILE).is_file():
                found.append(
                    _Candidate(
                        name,
                        None,
                        entry,
                        f"version folder {entry.name!r} is not a version number (expected ASCII digits "
                        "without a leading zero, e.g. 1 or 12)",
                    )
                )
            elif version is not None:
                found.append(_Candidate(name, version, entry))
        return found

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.models_dir)) or "."
        except ValueError:
            return path.name

    def _relative_message(self, message: str) -> str:
        """A load error with the repository root cut from the paths it names."""
        return message.replace(f"{self.models_dir}{os.sep}", "").replace(str(self.models_dir), ".")


def _list_dirs(directory: Path, include_files: bool = False) -> list[Path]:
    """The entries of `directory` (sorted, hidden ones skipped), folders only unless `include_files`."""
    found = []
    for entry in os.scandir(directory):
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = True
        if is_dir or include_files:
            found.append(Path(entry.path))
    return sorted(found)


def _report(previous: RegistrySnapshot, snapshot: RegistrySnapshot, models_dir: Path) -> ReloadReport:
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
        fault=snapshot.fault,
        snapshot=snapshot,
    )
    logger.info(
        "reloaded %s: added %s, updated %s, removed %s, kept %s, failed %s%s",
        models_dir,
        report.added,
        report.updated,
        report.removed,
        [f.label for f in report.kept],
        [f.label for f in report.failed],
        f", fault: {report.fault}" if report.fault else "",
    )
    return report


def _replace_fault(previous: RegistrySnapshot, fault: str) -> RegistrySnapshot:
    return RegistrySnapshot(
        previous.models_dir, previous.models, previous.failures, previous.fingerprints, previous.stale, fault
    )


def _fingerprint(directory: Path) -> str:
    """Changes whenever a file of the version folder is replaced, rewritten, added or removed; OSError when
    the folder cannot be read (FileNotFoundError when it has no metadata)."""
    digest = hashlib.sha256()
    digest.update((directory / METADATA_FILE).read_bytes())
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        st = path.stat()
        digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
    return digest.hexdigest()


def _read_metadata_quietly(directory: Path) -> ModelMetadata | None:
    try:
        return ModelMetadata.read(directory)
    except Exception:  # pydantic ValidationError, OSError, JSON errors: reported by the load itself
        return None


def _try_metadata(candidate: _Candidate) -> ModelMetadata | None:
    if not candidate.directory.is_dir():
        return None
    return _read_metadata_quietly(candidate.directory)
