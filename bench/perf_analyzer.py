"""Drive a KServe v2 server with NVIDIA perf_analyzer, the standard v2 load client, run unmodified.

perf_analyzer's Linux wheels (PyPI `perf-analyzer` 2.60.0) need glibc >= 2.38, newer than Debian 12's 2.36, so
on Debian 12 pip only offers a 0.1.0 placeholder. `setup` therefore fetches the real manylinux_2_38 wheel with
`pip download`, takes its one binary out, and fetches the shared libraries that binary links (`readelf -d`:
libc, libm, libstdc++, libgcc_s, libz, libssl, libcrypto; libssl also pulls libzstd) from Debian 13
(trixie) with `apt-get download`, through a private apt configuration so the system's sources stay as they
are, and unpacks them with `dpkg-deb -x`. The binary then runs through trixie's own dynamic loader:

    <home>/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \\
        --library-path <home>/root/usr/lib/x86_64-linux-gnu <home>/bin/perf_analyzer ARGS

Reproduce (a server must answer `GET /v2/models/NAME/config`, Triton's model configuration, or gRPC
`ModelConfig`; perf_analyzer stops with "failed to get model config" without it):

    python -m bench.perf_analyzer setup [--cache DIR]      # idempotent; default ~/.cache/autoencoder-serving
    python -m bench.perf_analyzer run --url 127.0.0.1:8000 --model digits-plain \\
        [--protocol http|grpc] [--input-data zero|random|FILE] [--batch 64] [--concurrency 32] \\
        [--binary|--json] [--measurement-ms 2000] [--out summary.json] [-- EXTRA perf_analyzer FLAGS]

perf_analyzer's "infer/sec" counts every row of a batch as one inference, so it is samples/s; requests/s is
that divided by the batch size. Latencies are whole requests, as the client sees them. perf_analyzer stops at
the first failed request ("Thread [N] had error: ..."), so a run either measures clean traffic or reports its
errors and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

__all__ = [
    "Installation",
    "RunOptions",
    "SetupError",
    "Summary",
    "default_cache",
    "main",
    "run",
    "setup",
]

Protocol = Literal["http", "grpc"]
TensorFormat = Literal["binary", "json"]

PA_VERSION = "2.60.0"
WHEEL_PLATFORM = "manylinux_2_38_x86_64"
WHEEL_MEMBER = "perf_analyzer/bin/perf_analyzer"
DEBIAN_SUITE = "trixie"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# What the binary's NEEDED entries resolve to in trixie, and what those need in turn (libssl3t64: libzstd1).
DEBIAN_PACKAGES = ("libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libssl3t64", "libzstd1")
MANIFEST = "installed.json"
_THREAD_ERROR = re.compile(r"^Thread \[\d+\] had error: (.*)$")
_RUN_ERROR = re.compile(r"^(?:error: |Failed to )")
_REQUEST_COUNT = re.compile(r"^\s*Request count: (\d+)")


class SetupError(Exception):
    """perf_analyzer could not be fetched or does not start; the message says which step and why."""


def default_cache() -> Path:
    return Path.home() / ".cache" / "autoencoder-serving" / "perf_analyzer"


@dataclass(frozen=True)
class Installation:
    """One unpacked perf_analyzer with the trixie libraries and loader it runs on."""

    home: Path

    @property
    def binary(self) -> Path:
        return self.home / "bin" / "perf_analyzer"

    @property
    def library_dir(self) -> Path:
        return self.home / "root" / "usr" / "lib" / "x86_64-linux-gnu"

    @property
    def loader(self) -> Path:
        return self.library_dir / "ld-linux-x86-64.so.2"

    def command(self, args: Sequence[str]) -> list[str]:
        """The command line that runs perf_analyzer with `args` through trixie's loader and libraries."""
        return [str(self.loader), "--library-path", str(self.library_dir), str(self.binary), *args]


def _run_step(what: str, cmd: Sequence[str], cwd: Path | None = None, timeout_s: float = 600) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR:", "error:"))] or lines[-1:]
        raise SetupError(f"{what} failed ({done.returncode}): {' | '.join(errors[-2:]) or 'no output'}")
    return done.stdout + done.stderr  # perf_analyzer --version writes to stderr


def _fetch_binary(work: Path, installation: Installation) -> None:
    """Download the manylinux_2_38 wheel and take perf_analyzer's binary out of it."""
    work.mkdir(parents=True)
    _run_step(
        f"pip download perf-analyzer=={PA_VERSION}",
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--platform", WHEEL_PLATFORM, f"perf-analyzer=={PA_VERSION}", "--dest",
            str(work),
        ],
    )  # fmt: skip
    wheels = sorted(work.glob(f"perf_analyzer-{PA_VERSION}-*.whl"))
    if not wheels:
        raise SetupError(f"pip download left no perf_analyzer-{PA_VERSION} wheel in {work}")
    binary = installation.binary
    binary.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            binary.write_bytes(wheel.read(WHEEL_MEMBER))
        except KeyError as exc:
            raise SetupError(f"{wheels[0].name} has no {WHEEL_MEMBER}") from exc
    binary.chmod(0o755)


def _apt_options(apt: Path) -> list[str]:
    """apt settings that read only a trixie source list and keep every list, cache and state file in `apt`."""
    settings = {
        "Dir::Etc::sourcelist": apt / "sources.list",
        "Dir::Etc::sourceparts": apt / "sources.list.d",
        "Dir::Etc::preferencesparts": apt / "preferences.d",
        "Dir::Etc::preferences": apt / "preferences",
        "Dir::State::Lists": apt / "lists",
        "Dir::State::status": apt / "status",
        "Dir::Cache": apt / "cache",
        "APT::Architecture": "amd64",
    }
    if os.geteuid() == 0:
        # apt drops to the _apt user to download, who may not write into a root-owned cache folder.
        settings["APT::Sandbox::User"] = "root"
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def _fetch_libraries(apt: Path, root: Path, mirror: str) -> dict[str, str]:
    """apt-get download the trixie packages and unpack them into `root`; return {package: version}."""
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True)
    (apt / "preferences").touch()
    (apt / "status").touch()
    (apt / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {DEBIAN_SUITE} main\n")
    options = _apt_options(apt)
    updated = _run_step(
        f"apt-get update ({DEBIAN_SUITE} from {mirror})", ["apt-get", "-q", *options, "update"]
    )
    if not any((apt / "lists").glob(f"*_dists_{DEBIAN_SUITE}_*Packages*")):
        # apt-get update exits 0 when a source cannot be reached; it only warns.
        said = [ln.strip() for ln in updated.splitlines() if ln.startswith(("W:", "E:", "Err:"))]
        raise SetupError(
            f"apt-get update got no {DEBIAN_SUITE} package list from {mirror}: {' | '.join(said[:2])}"
        )
    debs = apt / "debs"
    _run_step(
        f"apt-get download {' '.join(DEBIAN_PACKAGES)}",
        ["apt-get", "-q", *options, "download", *DEBIAN_PACKAGES],
        cwd=debs,
    )
    versions: dict[str, str] = {}
    root.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        fields = _run_step(
            f"dpkg-deb --field {deb.name}", ["dpkg-deb", "--field", str(deb), "Package", "Version"]
        )
        parsed = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        versions[parsed.get("Package", deb.name)] = parsed.get("Version", "?")
        _run_step(f"dpkg-deb -x {deb.name}", ["dpkg-deb", "-x", str(deb), str(root)])
    missing = sorted(set(DEBIAN_PACKAGES) - set(versions))
    if missing:
        raise SetupError(f"apt-get download fetched no {', '.join(missing)}")
    return versions


def _check_linkage(installation: Installation) -> None:
    """Every library the binary loads must come from the unpacked trixie folder, not the host's older ones."""
    listing = _run_step(
        "ld.so --list perf_analyzer",
        [str(installation.loader), "--list", "--library-path", str(installation.library_dir),
         str(installation.binary)],
        timeout_s=30,
    )  # fmt: skip
    problems = []
    for line in listing.splitlines():
        name, arrow, where = line.strip().partition(" => ")
        if not arrow:
            continue  # linux-vdso, which the kernel provides
        path = where.split(" (")[0]
        if path == "not found" or not Path(path).resolve().is_relative_to(installation.home.resolve()):
            problems.append(f"{name} -> {path}")
    if problems:
        raise SetupError(
            "perf_analyzer needs libraries the trixie packages did not provide (add their packages to "
            f"DEBIAN_PACKAGES): {', '.join(problems)}"
        )


def _check_version(installation: Installation) -> str:
    out = _run_step("perf_analyzer --version", installation.command(["--version"]), timeout_s=30)
    if "Perf Analyzer Version" not in out:
        raise SetupError(f"perf_analyzer --version printed {out.strip()!r}")
    return out.strip()


def setup(cache: Path | None = None, mirror: str = DEBIAN_MIRROR) -> Installation:
    """Fetch and unpack perf_analyzer and its trixie libraries into `cache`, unless already there."""
    cache = cache or default_cache()
    installation = Installation(cache / f"{PA_VERSION}-{DEBIAN_SUITE}")
    if (installation.home / MANIFEST).exists():
        _check_version(installation)
        return installation
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise SetupError(
            f"perf_analyzer's wheel is for Linux x86_64, not {platform.system()} {platform.machine()}"
        )
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SetupError(f"{tool} not found: perf_analyzer's runtime libraries come from Debian packages")
    if not KEYRING.exists():
        raise SetupError(
            f"{KEYRING} not found (Debian's debian-archive-keyring package) to verify {DEBIAN_SUITE}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename at the end, so an interrupted setup never looks finished.
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as build_name:
        build = Path(build_name)
        staged = Installation(build / "home")
        _fetch_binary(build / "wheel", staged)
        packages = _fetch_libraries(build / "apt", staged.home / "root", mirror)
        _check_linkage(staged)
        version = _check_version(staged)
        manifest = {"perf_analyzer": PA_VERSION, "reports": version, "suite": DEBIAN_SUITE}
        (staged.home / MANIFEST).write_text(json.dumps(manifest | {"packages": packages}, indent=2) + "\n")
        if installation.home.exists():
            shutil.rmtree(installation.home)  # a leftover without a manifest
        staged.home.rename(installation.home)
    return installation


@dataclass(frozen=True)
class RunOptions:
    """One perf_analyzer measurement: one model, protocol, batch size and concurrency."""

    url: str
    """host:port, no scheme (perf_analyzer's -u)."""
    model: str
    protocol: Protocol = "http"
    tensor_format: TensorFormat = "binary"
    """Tensor encoding of requests and answers over HTTP; gRPC always sends raw contents."""
    input_data: str = "random"
    """zero, random (perf_analyzer's default: random bytes, so any float bit pattern) or a JSON data file."""
    batch: int = 1
    concurrency: int = 32
    measurement_ms: int = 2000
    """Length of each measurement window; perf_analyzer measures windows until three agree within 10%."""
    max_trials: int = 10
    """At most this many windows before perf_analyzer gives up as unstable."""
    model_version: str | None = None
    extra: tuple[str, ...] = ()
    """Further perf_analyzer flags, passed as they are."""

    def args(self, csv_path: Path) -> list[str]:
        """perf_analyzer's own flags for these options, writing its CSV report to `csv_path`."""
        args = [
            "-m", self.model, "-u", self.url, "-i", self.protocol, "-b", str(self.batch),
            "--concurrency-range", str(self.concurrency), "--measurement-interval", str(self.measurement_ms),
            "--max-trials", str(self.max_trials), "--input-data", self.input_data, "--shared-memory", "none",
            "-f", str(csv_path), "--verbose-csv",
        ]  # fmt: skip
        if self.model_version is not None:
            args += ["-x", self.model_version]
        if self.protocol == "http":
            # perf_analyzer ignores both flags over gRPC, and asks for binary outputs whenever its inputs are.
            args += [
                "--input-tensor-format",
                self.tensor_format,
                "--output-tensor-format",
                self.tensor_format,
            ]
        return [*args, *self.extra]

    @property
    def timeout_s(self) -> float:
        # Each window lasts 1.2 x the interval; the rest covers start-up and the last requests in flight.
        return self.max_trials * self.measurement_ms * 1.2 / 1000 + 60


@dataclass(frozen=True)
class Summary:
    """What one perf_analyzer run measured, from its CSV report and its printed summary."""

    model: str
    protocol: Protocol
    tensor_format: TensorFormat
    batch: int
    concurrency: int
    exit_code: int
    requests: int
    """Requests completed inside the windows that perf_analyzer kept."""
    samples_per_s: float
    """perf_analyzer's "infer/sec": it counts each row of a batch as one inference."""
    avg_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: tuple[str, ...]
    command: tuple[str, ...] = field(repr=False)
    output: str = field(repr=False)

    @property
    def requests_per_s(self) -> float:
        return self.samples_per_s / self.batch

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.errors and self.requests > 0

    def line(self) -> str:
        head = f"{self.model} {self.protocol}/{self.tensor_format} b{self.batch} c{self.concurrency}"
        if not self.ok:
            return f"{head}: FAILED (exit {self.exit_code}): {'; '.join(self.errors) or 'no measurement'}"
        return (
            f"{head}: {self.samples_per_s:,.0f} infer/s (samples/s), {self.requests_per_s:,.0f} requests/s, "
            f"p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"{self.requests} requests, 0 errors"
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self) | {"requests_per_s": self.requests_per_s, "ok": self.ok}


def _errors(output: str) -> tuple[str, ...]:
    found: list[str] = []
    for raw in output.splitlines():
        line = raw.strip()
        thread = _THREAD_ERROR.match(line)
        message = thread.group(1) if thread else line if _RUN_ERROR.match(line) else None
        if message and message not in found:
            found.append(message)
    return tuple(found)


def _ms(row: dict[str, str], column: str) -> float | None:
    value = row.get(column)
    return float(value) / 1000 if value not in (None, "") else None  # perf_analyzer reports usec


def parse(
    options: RunOptions, exit_code: int, output: str, csv_path: Path, command: Sequence[str]
) -> Summary:
    """Read perf_analyzer's CSV report (the last row is ours) and the request count it printed."""
    row: dict[str, str] = {}
    if csv_path.exists():
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        row = rows[-1] if rows else {}
    counts = [int(m.group(1)) for m in map(_REQUEST_COUNT.match, output.splitlines()) if m]
    errors = _errors(output)
    if exit_code != 0 and not errors:
        tail = [ln.strip() for ln in output.splitlines() if ln.strip()]
        errors = (tail[-1] if tail else f"perf_analyzer exited {exit_code} and printed nothing",)
    elif exit_code == 0 and not row:
        errors = (*errors, f"perf_analyzer wrote no CSV report to {csv_path}")
    return Summary(
        model=options.model,
        protocol=options.protocol,
        tensor_format=options.tensor_format,
        batch=options.batch,
        concurrency=options.concurrency,
        exit_code=exit_code,
        requests=counts[-1] if counts else 0,
        samples_per_s=float(row.get("Inferences/Second") or 0.0),
        avg_ms=_ms(row, "Avg latency"),
        p50_ms=_ms(row, "p50 latency"),
        p90_ms=_ms(row, "p90 latency"),
        p95_ms=_ms(row, "p95 latency"),
        p99_ms=_ms(row, "p99 latency"),
        errors=errors,
        command=tuple(command),
        output=output,
    )


def run(options: RunOptions, installation: Installation | None = None) -> Summary:
    """Run perf_analyzer once with `options` (setting it up first if needed) and summarise its report."""
    installation = installation or setup()
    with tempfile.TemporaryDirectory(prefix="ae-perf-analyzer-") as tmp:
        csv_path = Path(tmp) / "report.csv"
        command = installation.command(options.args(csv_path))
        try:
            done = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=options.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            partial = (
                exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
            )
            output = partial + f"\nerror: perf_analyzer did not finish within {options.timeout_s:.0f} s\n"
            return parse(options, 124, output, csv_path, command)
        return parse(options, done.returncode, done.stdout, csv_path, command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf_analyzer",
        description="Set up and run NVIDIA perf_analyzer (unmodified) against a KServe v2 server.",
        epilog="Arguments after `--` go to perf_analyzer as they are.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"where perf_analyzer is unpacked (default {default_cache()})",
    )
    common.add_argument("--mirror", default=DEBIAN_MIRROR, help="Debian mirror for the trixie packages")
    commands.add_parser(
        "setup", parents=[common], help="fetch perf_analyzer and the trixie libraries it runs on"
    )

    run_cmd = commands.add_parser(
        "run",
        parents=[common],
        help="measure one model at one batch size and concurrency (sets up if needed)",
    )
    run_cmd.add_argument("--url", required=True, help="host:port of the server, without a scheme")
    run_cmd.add_argument("--model", required=True)
    run_cmd.add_argument("--model-version", default=None)
    run_cmd.add_argument("--protocol", choices=get_args(Protocol), default="http")
    run_cmd.add_argument(
        "--input-data", default="random", help="zero, random or a perf_analyzer JSON data file"
    )
    run_cmd.add_argument(
        "--shared-memory",
        choices=["none"],
        default="none",
        help="only none: the service has no shared memory",
    )
    run_cmd.add_argument("--batch", type=int, default=1)
    run_cmd.add_argument("--concurrency", type=int, default=32)
    formats = run_cmd.add_mutually_exclusive_group()
    formats.add_argument(
        "--binary",
        dest="tensor_format",
        action="store_const",
        const="binary",
        help="binary tensors (default)",
    )
    formats.add_argument(
        "--json", dest="tensor_format", action="store_const", const="json", help="JSON tensors"
    )
    run_cmd.set_defaults(tensor_format="binary")
    run_cmd.add_argument("--measurement-ms", type=int, default=2000, help="length of each measurement window")
    run_cmd.add_argument("--max-trials", type=int, default=10, help="windows before giving up as unstable")
    run_cmd.add_argument("--out", type=Path, default=None, help="also write the summary here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "setup" and extra:
        parser.error("setup takes no perf_analyzer flags")
    if args.command == "run":
        if "://" in args.url:
            parser.error(f"--url takes host:port, without a scheme: {args.url!r}")
        if args.protocol == "grpc" and args.tensor_format == "json":
            parser.error("--json applies to HTTP only: gRPC always sends raw tensor contents")
        if args.input_data not in ("zero", "random") and not Path(args.input_data).exists():
            parser.error(f"--input-data: no such file {args.input_data!r} (or use zero or random)")
        if args.batch < 1 or args.concurrency < 1 or args.measurement_ms < 1 or args.max_trials < 1:
            parser.error("--batch, --concurrency, --measurement-ms and --max-trials must be positive")
    try:
        installation = setup(args.cache, args.mirror)
    except SetupError as exc:
        print(f"perf_analyzer setup failed: {exc}", file=sys.stderr)
        return 1
    if args.command == "setup":
        print(f"perf_analyzer {PA_VERSION} ready: {' '.join(installation.command([]))}")
        return 0

    options = RunOptions(
        url=args.url,
        model=args.model,
        protocol=args.protocol,
        tensor_format=args.tensor_format,
        input_data=args.input_data,
        batch=args.batch,
        concurrency=args.concurrency,
        measurement_ms=args.measurement_ms,
        max_trials=args.max_trials,
        model_version=args.model_version,
        extra=tuple(extra),
    )
    summary = run(options, installation)
    print(summary.line())
    if not summary.ok:
        print("perf_analyzer output (last lines):", *summary.output.strip().splitlines()[-15:], sep="\n  ")
    if args.out is not None:
        args.out.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
