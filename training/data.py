"""Data sets (scikit-learn's built-in ones, the user's .npy/.csv, IDX files such as MNIST's), validation,
splits and normalisation.

A data set is an array of samples, (n, *sample_shape), and its input kind (see `service.contract`): rows
(n, features), images (n, channels, height, width), or series windows (n, window, channels). A series read
from a file also keeps its time steps (T, channels), which `training.series` splits in time order before
cutting windows.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import ImageSpec, InputKind, Normalisation, SeriesSpec
from training.config import NormalisationKind

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_SERIES",
    "MAX_IMAGE_CHANNELS",
    "MIN_ROWS",
    "MIN_TRAIN_ROWS",
    "DataError",
    "DataOptions",
    "Dataset",
    "Normaliser",
    "Split",
    "as_rows",
    "load_data",
    "read_idx",
    "read_mnist",
    "read_table",
    "split_rows",
    "stat_shape",
    "validate_rows",
]

Array = npt.NDArray[np.float32]

# The fewest training rows `split_rows` leaves after the test and validation splits.
MIN_TRAIN_ROWS = 8
# The fewest rows any split can use: 2 validation rows and MIN_TRAIN_ROWS training rows, with no test split.
# Whether the rows suffice for the chosen splits is `split_rows`' check (the defaults need 13).
MIN_ROWS = MIN_TRAIN_ROWS + 2


class DataError(ValueError):
    """The data cannot be used for training; the message says what was wrong and what was expected."""


# The most channels an image may have (grey, grey + alpha, RGB, RGBA), as the contract's ImageSpec allows.
MAX_IMAGE_CHANNELS = 4


@dataclass(frozen=True)
class Dataset:
    """Samples of raw values, what one sample is, and where they came from."""

    x: Array
    """(n, *sample_shape) float32: (n, features) rows, (n, channels, height, width) images, or
    (n, window, channels) series windows."""
    source: str
    kind: InputKind = "rows"
    image: ImageSpec | None = None
    """Set exactly when `kind` is image."""
    series: SeriesSpec | None = None
    """Set exactly when `kind` is series."""
    feature_names: tuple[str, ...] | None = None
    """Each column's name (a CSV header, or given): the features of a row, the channels of a series; None
    when they are numbered only."""
    path: Path | None = None
    """The file the samples were read from (absolute), None for a built-in data set."""
    steps: Array | None = None
    """A series read as one: its (T, channels) raw values in time order, which `x` was cut from (at the
    spec's stride); None when the samples are independent (rows, images, windows given as they are)."""
    notes: Mapping[str, Any] | None = None
    """How the data was read, for the metadata (a series: its time column's gaps, how the window was
    chosen)."""

    def __post_init__(self) -> None:
        image, series = self.image, self.series
        # The sample shape each kind's spec describes (a row has no spec: any 1-D sample).
        layouts: dict[InputKind, tuple[int, ...] | None] = {
            "rows": self.sample_shape if self.x.ndim == 2 else None,
            "image": (image.channels, image.height, image.width) if image else None,
            "series": (series.window, series.channels) if series else None,
        }
        others = [spec for kind, spec in (("image", image), ("series", series)) if kind != self.kind]
        if layouts[self.kind] != self.sample_shape or any(spec is not None for spec in others):
            raise ValueError(
                f"a {self.kind} data set of shape {self.x.shape} does not match its layout "
                f"(image {image}, series {series})"
            )

    @classmethod
    def of_images(cls, x: Array, source: str) -> Dataset:
        """Images (n, channels, height, width); the pixel range recorded is the one the data spans."""
        _, channels, height, width = x.shape
        spec = ImageSpec(
            channels=channels, height=height, width=width, pixel_range=(float(x.min()), float(x.max()))
        )
        return cls(x, source, "image", image=spec)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def shares_units(self) -> bool:
        """Whether all values are in the same units (image pixels), so they share one scale by default."""
        return self.kind == "image"

    def with_feature_names(self, names: Sequence[str]) -> Dataset:
        """These samples with their columns (the last axis) named `names`, distinct and non-empty."""
        names = tuple(n.strip() for n in names)
        if len(names) != self.x.shape[-1]:
            raise DataError(
                f"{self.source}: {len(names)} feature names given for {self.x.shape[-1]} columns; "
                "expected one name per column"
            )
        _check_names(names, self.source)
        return replace(self, feature_names=names)


def _sklearn_loader(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from sklearn import datasets

        return getattr(datasets, f"load_{name}")()

    return load


# The data sets that ship inside scikit-learn (no download); feature matrices only, labels are ignored.
# The shape is one image's (channels, height, width) for image data sets, None for rows.
BUILTIN_DATASETS: dict[str, tuple[Callable[[], Any], tuple[int, int, int] | None]] = {
    "digits": (_sklearn_loader("digits"), (1, 8, 8)),
    "iris": (_sklearn_loader("iris"), None),
    "wine": (_sklearn_loader("wine"), None),
    "breast_cancer": (_sklearn_loader("breast_cancer"), None),
    "diabetes": (_sklearn_loader("diabetes"), None),
}


def validate_rows(x: npt.NDArray[Any], source: str) -> Array:
    """Check that `x` is a finite, numeric array of enough samples, (rows, features), (rows, height, width)
    or (rows, channels, height, width); return it as float32."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: expected numeric values, got dtype {x.dtype}")
    if not 2 <= x.ndim <= 4:
        raise DataError(
            f"{source}: expected a 2-D array (rows, features), 3-D (rows, height, width) or "
            f"4-D (rows, channels, height, width), got shape {tuple(x.shape)}"
        )
    if min(x.shape[1:]) < 1:
        raise DataError(f"{source}: expected at least 1 value per row, got shape {tuple(x.shape)}")
    if x.shape[0] < MIN_ROWS:
        raise DataError(f"{source}: expected at least {MIN_ROWS} rows, got {x.shape[0]}")
    values = x.astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        row, *position = (int(i) for i in np.argwhere(bad)[0])
        where = f"column {position[0]}" if len(position) == 1 else f"position {tuple(position)}"
        raise DataError(
            f"{source}: expected finite numbers, found {int(bad.sum())} NaN/inf values "
            f"(first at row {row}, {where})"
        )
    return values


def _images(x: Array, source: str) -> Dataset:
    """(rows, height, width) or (rows, channels, height, width) values as an image data set."""
    images = x[:, None] if x.ndim == 3 else x  # (rows, channels, height, width)
    if images.shape[1] > MAX_IMAGE_CHANNELS:
        raise DataError(
            f"{source}: a 4-D array is read as images (rows, channels, height, width) with 1 to "
            f"{MAX_IMAGE_CHANNELS} channels, got {images.shape[1]} channels in shape {tuple(x.shape)}"
        )
    return Dataset.of_images(images, source)


def as_rows(x: Array) -> Array:
    """Samples (n, *sample_shape) as rows of their values, (n, values), for what needs rows (PCA, trees)."""
    return x.reshape(len(x), -1)


# Delimiters a CSV file may use, in the order they are tried on its first line.
CSV_DELIMITERS = ("\t", ";", ",")


@dataclass(frozen=True)
class Table:
    """The cells of a CSV file as text, and its header's names when its first row is a header."""

    names: tuple[str, ...] | None
    rows: list[list[str]]
    source: str
    decimal_comma: bool = False
    """Whether numbers are written with a decimal comma ("1,5" in a `;` file)."""

    def column(self, name: str) -> int:
        """The index of the column `name`; DataError naming the columns there are."""
        if self.names is None or name not in self.names:
            there = ", ".join(repr(n) for n in self.names) if self.names else "none (no header row)"
            raise DataError(f"{self.source}: no column {name!r}; its columns are {there}")
        return self.names.index(name)

    def numbers(self, columns: Sequence[int]) -> npt.NDArray[np.float64]:
        """The cells of `columns` as numbers, (rows, len(columns)); DataError at the first that is not."""
        values = np.empty((len(self.rows), len(columns)), dtype=np.float64)
        first = 2 if self.names is not None else 1
        for i, row in enumerate(self.rows):
            for j, c in enumerate(columns):
                try:
                    values[i, j] = _cell(row[c], self.decimal_comma)
                except ValueError:
                    where = f"column {self.names[c]!r} " if self.names else ""
                    raise DataError(
                        f"{self.source}: row {i + first} {where}has a non-numeric value {row[c].strip()!r}"
                    ) from None
        return values


def sniff_delimiter(line: str) -> str:
    """The delimiter of a CSV file from its first line: tab or `;` when either splits it (outside quotes),
    else `,`. Tab and `;` go first because `,` may be a decimal mark inside `;` files ("1,5;2,3")."""
    for delimiter in CSV_DELIMITERS[:-1]:
        if len(next(csv.reader([line], delimiter=delimiter), [])) > 1:
            return delimiter
    return ","


def _cell(text: str, decimal_comma: bool) -> float:
    return float(text.replace(",", ".") if decimal_comma else text)


def read_table(path: Path) -> Table:
    """A CSV file's cells (`,`, `;` or tab, sniffed from the first line); a first row that is not all numbers
    is the header. DataError for a file that is not UTF-8, empty, ragged or with a bad header."""
    # utf-8-sig also reads plain UTF-8, and drops the byte-order mark some spreadsheets write.
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path.name}: not UTF-8 text (found byte {exc.object[exc.start : exc.start + 1]!r}); "
            "expected a UTF-8 CSV file of numbers"
        ) from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise DataError(f"{path.name}: the CSV file is empty")
    delimiter = sniff_delimiter(first)
    rows = [row for row in csv.reader(lines, delimiter=delimiter) if row and any(c.strip() for c in row)]
    # "1,5;2,3": a `;` file whose cells hold decimal commas (as spreadsheets in many locales write them).
    decimal_comma = (
        delimiter == ";" and any("," in c for c in rows[-1]) and not any("." in c for c in rows[-1])
    )
    names: tuple[str, ...] | None = None
    # A first row that does not parse as numbers is taken as a header.
    if not all(_is_float(c, decimal_comma) for c in rows[0]):
        names = tuple(c.strip() for c in rows[0])
        rows = rows[1:]
        _check_names(names, path.name)
    width = len(names) if names is not None else len(rows[0]) if rows else 0
    for number, row in enumerate(rows, start=1 + (names is not None)):
        if len(row) != width:
            raise DataError(f"{path.name}: row {number} has {len(row)} columns, expected {width}")
    return Table(names, rows, path.name, decimal_comma)


def _check_names(names: tuple[str, ...], source: str) -> None:
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        raise DataError(f"{source}: header column {empty[0]} has no name; expected a name for every column")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{source}: header names {repeated} repeat; expected distinct column names")


def _is_float(cell: str, decimal_comma: bool = False) -> bool:
    try:
        _cell(cell, decimal_comma)
    except ValueError:
        return False
    return True


# IDX type codes (the format MNIST is published in) -> big-endian numpy dtypes.
IDX_TYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The MNIST images and labels files inside a folder, gzipped as published or unpacked.
MNIST_FILES = {"images": "t10k-images-idx3-ubyte", "labels": "t10k-labels-idx1-ubyte"}
# The most values an IDX file may declare: 64 M, well above MNIST's 47 M, so a corrupt header cannot make the
# reader allocate without bound.
MAX_IDX_VALUES = 1 << 26


def read_idx(path: Path) -> npt.NDArray[Any]:
    """An IDX file (gzipped when its name ends in .gz) as an array of its declared shape and type.

    The format: two zero bytes, a type code, the number of dimensions, each dimension as a big-endian
    uint32, then the values in C order, big-endian."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES or head[3] == 0:
                raise DataError(
                    f"{path.name}: not an IDX file (header {head.hex() or 'empty'}); expected two zero "
                    f"bytes, a type code in {sorted(IDX_TYPES)} and a dimension count"
                )
            dtype = np.dtype(IDX_TYPES[head[2]])
            dims = np.frombuffer(handle.read(4 * head[3]), dtype=">u4")
            count = int(np.prod(dims, dtype=np.int64)) if len(dims) == head[3] else -1
            if count < 0 or count > MAX_IDX_VALUES:
                raise DataError(
                    f"{path.name}: the IDX header declares shape {tuple(int(d) for d in dims)}; expected "
                    f"{head[3]} dimensions holding at most {MAX_IDX_VALUES} values"
                )
            body = handle.read(count * dtype.itemsize + 1)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path.name}: not a readable IDX file ({exc})") from None
    if len(body) != count * dtype.itemsize:
        raise DataError(
            f"{path.name}: the IDX header declares shape {tuple(int(d) for d in dims)} "
            f"({count * dtype.itemsize} bytes of values), the file holds {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(tuple(int(d) for d in dims))


def _mnist_file(folder: Path, role: str) -> Path:
    name = MNIST_FILES[role]
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: no {name}.gz (or {name}); expected a folder holding the MNIST IDX files")


def read_mnist(folder: Path) -> tuple[Dataset, npt.NDArray[np.int64]]:
    """The MNIST images of `folder` as one-channel images (n, 1, 28, 28), raw grey levels 0..255, and their
    labels (n,)."""
    if not folder.is_dir():
        raise DataError(f"MNIST folder not found: {folder}")
    images_file, labels_file = _mnist_file(folder, "images"), _mnist_file(folder, "labels")
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{folder}: images of shape {images.shape} and labels of shape {labels.shape}; expected "
            "(n, height, width) images and (n,) labels"
        )
    dataset = _images(validate_rows(images, images_file.name), images_file.name)
    return dataset, labels.astype(np.int64)


@dataclass(frozen=True)
class DataOptions:
    """How to read a data file beyond its shape: which columns, and whether (and how) it is a series."""

    kind: InputKind | None = None
    """`series`: rows are time steps; `rows`: rows are independent samples; None: a series when a time
    column or a window is given, else read from the array's shape (2-D rows, 3-D or 4-D images)."""
    time_column: str | None = None
    """A series' time column (numbers or ISO 8601 times, checked increasing), dropped from the channels."""
    columns: tuple[str, ...] | None = None
    """Keep only these CSV columns, in this order (None: every column but the time and dropped ones)."""
    drop_columns: tuple[str, ...] = ()
    """CSV columns to leave out (labels, say)."""
    window: int | None = None
    """Steps per window of a series; None: chosen from the data (`training.series.choose_window`)."""
    stride: int = 1
    """Steps between the starts of consecutive training windows (scoring always uses 1)."""

    @property
    def series(self) -> bool:
        """Whether the data is read as one series."""
        given = self.time_column is not None or self.window is not None
        return self.kind == "series" or (self.kind is None and given)

    @property
    def selects(self) -> bool:
        """Whether columns are picked by name (which needs a CSV header)."""
        return self.columns is not None or bool(self.drop_columns) or self.time_column is not None


def _selected(table: Table, options: DataOptions) -> list[int]:
    """The columns `options` keep from `table`, in order (not the time column)."""
    if table.names is None:
        raise DataError(
            f"{table.source}: columns are picked by name, but its first row is numbers, not a header; "
            "expected a header row of column names"
        )
    excluded = {table.column(n) for n in options.drop_columns}
    if options.time_column is not None:
        excluded.add(table.column(options.time_column))
    if options.columns is not None:
        chosen = [table.column(n) for n in options.columns]
        clash = [table.names[c] for c in chosen if c in excluded]
        if clash:
            raise DataError(f"{table.source}: columns {clash} are both kept and dropped (or the time column)")
    else:
        chosen = [c for c in range(len(table.names)) if c not in excluded]
    if not chosen:
        raise DataError(f"{table.source}: no columns left after dropping {sorted(excluded)}; expected one")
    return chosen


def _sensors() -> Table:
    from training.sensors import sensor_series

    text = sensor_series().csv()
    lines = list(csv.reader(text.splitlines()))
    return Table(tuple(lines[0]), lines[1:], "sensors")


# Generated series (no download), each with its time column: read as a series by default.
BUILTIN_SERIES: dict[str, tuple[Callable[[], Table], str]] = {"sensors": (_sensors, "time")}


def load_data(spec: str, options: DataOptions | None = None) -> Dataset:
    """Load `spec`: a built-in data set name (see BUILTIN_DATASETS and BUILTIN_SERIES), a path to a .npy
    or .csv file, or a folder holding the MNIST IDX files.

    A 3-D .npy array (rows, height, width) is taken as one-channel images, a 4-D one as images
    (rows, channels, height, width). A CSV file may separate its cells by `,`, `;` or tab; a first row that is
    not all numbers is its header, whose names become the feature names (or a series' channel names). A
    built-in table keeps scikit-learn's feature names. `options` picks CSV columns by name and reads a file
    as one series (T, channels) (`training.series.series_dataset`).
    """
    options = options or DataOptions()
    if spec in BUILTIN_SERIES:
        make, time_column = BUILTIN_SERIES[spec]
        return _from_table(make(), replace(options, kind="series", time_column=time_column))
    if spec in BUILTIN_DATASETS:
        if options.series or options.selects:
            raise DataError(
                f"{spec} is a built-in table or image set; series and column options apply to "
                ".csv and .npy files"
            )
        loader, image_shape = BUILTIN_DATASETS[spec]
        bunch = loader()
        rows = validate_rows(np.asarray(bunch.data), spec)
        if image_shape is None:
            listed = getattr(bunch, "feature_names", None)
            named = tuple(str(n) for n in listed) if listed is not None else None
            return Dataset(rows, spec, feature_names=named)
        return _images(rows.reshape(len(rows), *image_shape), spec)
    path = Path(spec)
    if path.is_dir():
        if options.series or options.selects:
            raise DataError(f"{spec} is a folder of MNIST images; series and column options apply to files")
        return read_mnist(path)[0]
    suffix = path.suffix.lower()
    if suffix not in {".npy", ".csv"}:
        raise DataError(
            f"unknown data {spec!r}: expected one of {sorted([*BUILTIN_DATASETS, *BUILTIN_SERIES])}, a path "
            "ending in .npy or .csv, or a folder of MNIST IDX files"
        )
    if not path.is_file():
        raise DataError(f"data file not found: {spec}")
    if suffix == ".csv":
        dataset = _from_table(read_table(path), options)
    elif options.selects:
        raise DataError(f"{path.name}: columns are picked by name from a CSV header, not from a .npy")
    else:
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path.name}: not a readable .npy array ({exc})") from None
        dataset = _from_values(raw, path.name, options)
    return replace(dataset, path=path.resolve())


def _from_table(table: Table, options: DataOptions) -> Dataset:
    """The data set of a CSV table's cells: the columns `options` keep, as rows or as one series."""
    width = len(table.names) if table.names is not None else len(table.rows[0]) if table.rows else 0
    columns = _selected(table, options) if options.selects else list(range(width))
    names = tuple(table.names[c] for c in columns) if table.names else None
    times = None
    if options.time_column is not None:
        at = table.column(options.time_column)
        times = [row[at] for row in table.rows]
    return _from_values(table.numbers(columns), table.source, options, names, times)


def _from_values(
    raw: npt.NDArray[Any],
    source: str,
    options: DataOptions,
    names: tuple[str, ...] | None = None,
    times: list[str] | None = None,
) -> Dataset:
    if options.series:
        from training.series import series_dataset  # training.series builds on this module

        return series_dataset(raw, source, options, names, times)
    values = validate_rows(raw, source)
    return Dataset(values, source, feature_names=names) if values.ndim == 2 else _images(values, source)


@dataclass(frozen=True)
class Split:
    """Row indices of the three splits."""

    train: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]


def split_rows(n_rows: int, validation_fraction: float, seed: int, test_every: int = 5) -> Split:
    """Rows whose index % test_every == 0 are the test split (none when test_every is 0); a seeded random
    `validation_fraction` of the rest is the validation split (none when it is 0: cross-fitting)."""
    index = np.arange(n_rows)
    is_test = index % test_every == 0 if test_every > 0 else np.zeros(n_rows, dtype=bool)
    rest = index[~is_test]
    shuffled = np.random.default_rng(seed).permutation(rest)
    n_val = max(2, round(validation_fraction * len(rest))) if validation_fraction > 0 else 0
    if len(rest) - n_val < MIN_TRAIN_ROWS:
        raise DataError(
            f"too few rows: {n_rows} rows leave {len(rest) - n_val} for training after the test and "
            f"validation splits, expected at least {MIN_TRAIN_ROWS}"
        )
    return Split(np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val]), index[is_test])


@dataclass(frozen=True)
class Normaliser:
    """Affine map fitted on the training samples: normalised = (raw - offset) / scale.

    `offset` and `scale` have one entry per index of the sample's channel axis and broadcast over the others:
    (features,) for rows, (1, channels) for series windows (the same over time), (channels, 1, 1) for
    channels-first images.

    Series windows (n, window, channels) may have centred channels (`service.contract.Normalisation`):
    `centred` is 1 on those and 0 elsewhere, `level` their normalised training mean (0 elsewhere), both
    (1, channels); after the affine map a window's mean on a centred channel is replaced by its level.
    """

    kind: NormalisationKind
    offset: Array
    scale: Array
    centred: Array | None = None
    level: Array | None = None

    @classmethod
    def fit(
        cls,
        x: Array,
        kind: NormalisationKind,
        shared: bool = False,
        channel_axis: int = -1,
        centred: Sequence[int] = (),
    ) -> Normaliser:
        """Fit on training samples (n, *sample_shape), one offset and scale per index of `channel_axis`
        (an axis of the sample); a constant one gets a scale of 1 so it never divides by zero.

        `shared` fits one offset and scale for all values, for values in the same units (image pixels):
        per-pixel scaling would blow up a border pixel that is almost always blank. `centred` names the
        channels of series windows (n, window, channels) read level-free.
        """
        shape = stat_shape(x.shape[1:], channel_axis)
        keep = 1 + channel_axis % (x.ndim - 1)  # the channel axis of `x`
        axes = tuple(range(x.ndim)) if shared else tuple(a for a in range(x.ndim) if a != keep)
        values = x.astype(np.float64)
        if kind == "standard":
            offset, spread = values.mean(axis=axes, keepdims=True), values.std(axis=axes, keepdims=True)
        elif kind == "robust":
            # Median and IQR / 1.349 (the std of normal data); the std where the middle half is one value.
            q25, offset, q75 = np.percentile(values, [25, 50, 75], axis=axes, keepdims=True)
            spread = np.where(q75 > q25, (q75 - q25) / 1.349, values.std(axis=axes, keepdims=True))
        elif kind == "minmax":
            low, high = values.min(axis=axes, keepdims=True), values.max(axis=axes, keepdims=True)
            offset, spread = low, high - low
        else:
            offset, spread = np.zeros((1, *shape)), np.ones((1, *shape))
        # keepdims leaves (1, *shape) per channel and all ones when shared: both broadcast to (1, *shape).
        offset, spread = (np.broadcast_to(v, (1, *shape))[0] for v in (offset, spread))
        # Relative to the value's magnitude, so a feature like 1e6 +- 1e-3 is not declared constant.
        tiny = spread <= 1e-8 * np.maximum(1.0, np.abs(offset))
        scale = np.where(tiny, 1.0, spread)
        affine = cls(kind, offset.astype(np.float32), scale.astype(np.float32))
        if not centred:
            return affine
        if x.ndim != 3 or channel_axis not in (-1, 1):
            raise ValueError("only series windows (n, window, channels) have centred channels")
        mask = np.zeros((1, x.shape[2]), np.float32)
        mask[0, list(centred)] = 1.0
        level = affine.transform(x).astype(np.float64).mean(axis=(0, 1)).reshape(1, -1) * mask
        return replace(affine, centred=mask, level=level.astype(np.float32))

    @classmethod
    def of(cls, normalisation: Normalisation, sample_shape: Sequence[int], channel_axis: int) -> Normaliser:
        """The normaliser a model's metadata records, shaped for samples of `sample_shape`."""
        shape = stat_shape(sample_shape, channel_axis)

        def shaped(values: list[float]) -> Array:
            entries = np.asarray(values, np.float32)
            # One entry per channel, or a single one shared by all.
            return np.broadcast_to(entries.reshape(shape if entries.size > 1 else ()), shape).copy()

        affine = cls(normalisation.kind, shaped(normalisation.offset), shaped(normalisation.scale))
        if not normalisation.centred:
            return affine
        mask, level = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        mask[0, normalisation.centred] = 1.0
        level[0, normalisation.centred] = normalisation.level
        return replace(affine, centred=mask, level=level)

    def record(self) -> Normalisation:
        """The metadata's record of this normaliser."""
        centred = [] if self.centred is None else np.flatnonzero(self.centred.ravel()).tolist()
        level = [] if self.level is None else self.level.ravel()[centred].tolist()
        return Normalisation(
            kind=self.kind,
            offset=self.offset.ravel().tolist(),
            scale=self.scale.ravel().tolist(),
            centred=centred,
            level=level,
        )

    def shift(self, affine: Array) -> Array:
        """What centring subtracts from affine-normalised windows `affine` (n, window, channels): each centred
        channel's window mean less its level, (n, 1, channels); zeros without centred channels."""
        if self.centred is None or self.level is None:
            return np.zeros((len(affine), *([1] * (affine.ndim - 1))), np.float32)
        shift: Array = (self.centred * (affine.mean(axis=1, keepdims=True) - self.level)).astype(np.float32)
        return shift

    def transform(self, x: Array) -> Array:
        affine = ((x - self.offset) / self.scale).astype(np.float32)
        return affine if self.centred is None else (affine - self.shift(affine)).astype(np.float32)

    def inverse(self, x: Array, like: Array | None = None) -> Array:
        """Normalised samples back to raw units; with centred channels, at the levels of the raw samples
        `like` (each window its own), else at the training level."""
        if self.centred is not None and like is not None:
            x = x + self.shift(((like - self.offset) / self.scale).astype(np.float32))
        return (x * self.scale + self.offset).astype(np.float32)


def stat_shape(sample_shape: Sequence[int], channel_axis: int) -> tuple[int, ...]:
    """The shape of a normaliser's offset for samples of `sample_shape`: the channel axis kept, others 1."""
    axis = channel_axis % len(sample_shape)
    return tuple(d if i == axis else 1 for i, d in enumerate(sample_shape))
