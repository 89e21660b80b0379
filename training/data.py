"""Data sets (scikit-learn's built-in ones, the user's .npy/.csv, IDX files such as MNIST's), validation,
splits and normalisation.

A data set is an array of samples, (n, *sample_shape), and its input kind (see `service.contract`): rows
(n, features), images (n, channels, height, width), or series windows (n, window, channels).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import ImageSpec, InputKind, Normalisation, SeriesSpec
from training.config import NormalisationKind

__all__ = [
    "BUILTIN_DATASETS",
    "MAX_IMAGE_CHANNELS",
    "MIN_ROWS",
    "MIN_TRAIN_ROWS",
    "DataError",
    "Dataset",
    "Normaliser",
    "Split",
    "as_rows",
    "load_data",
    "read_idx",
    "read_mnist",
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


def sniff_delimiter(line: str) -> str:
    """The delimiter of a CSV file from its first line: tab or `;` when either splits it (outside quotes),
    else `,`. Tab and `;` go first because `,` may be a decimal mark inside `;` files ("1,5;2,3")."""
    for delimiter in CSV_DELIMITERS[:-1]:
        if len(next(csv.reader([line], delimiter=delimiter), [])) > 1:
            return delimiter
    return ","


def _cell(text: str, decimal_comma: bool) -> float:
    return float(text.replace(",", ".") if decimal_comma else text)


def _read_csv(path: Path) -> tuple[npt.NDArray[np.float64], tuple[str, ...] | None]:
    """The numbers of a CSV file of rows, and its header's names when its first row is a header."""
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
    values: list[list[float]] = []
    for number, row in enumerate(rows, start=1 + (names is not None)):
        if len(row) != width:
            raise DataError(f"{path.name}: row {number} has {len(row)} columns, expected {width}")
        try:
            values.append([_cell(c, decimal_comma) for c in row])
        except ValueError:
            cell = next(c for c in row if not _is_float(c, decimal_comma))
            raise DataError(f"{path.name}: row {number} has a non-numeric value {cell!r}") from None
    return np.asarray(values, dtype=np.float64).reshape(len(values), width), names


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


def load_data(spec: str) -> Dataset:
    """Load `spec`: a built-in data set name (see BUILTIN_DATASETS), a path to a .npy or .csv file of rows,
    or a folder holding the MNIST IDX files.

    A 3-D .npy array (rows, height, width) is taken as one-channel images, a 4-D one as images
    (rows, channels, height, width). A CSV file may separate its cells by `,`, `;` or tab; a first row that is
    not all numbers is its header, whose names become the feature names. A built-in table keeps
    scikit-learn's feature names.
    """
    if spec in BUILTIN_DATASETS:
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
        return read_mnist(path)[0]
    suffix = path.suffix.lower()
    if suffix not in {".npy", ".csv"}:
        raise DataError(
            f"unknown data {spec!r}: expected one of {sorted(BUILTIN_DATASETS)}, a path ending in .npy or "
            ".csv, or a folder of MNIST IDX files"
        )
    if not path.is_file():
        raise DataError(f"data file not found: {spec}")
    names: tuple[str, ...] | None = None
    if suffix == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path.name}: not a readable .npy array ({exc})") from None
    else:
        raw, names = _read_csv(path)
    values = validate_rows(raw, path.name)
    resolved = path.resolve()
    if values.ndim == 2:
        return Dataset(values, path.name, feature_names=names, path=resolved)
    return replace(_images(values, path.name), path=resolved)


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
    """

    kind: NormalisationKind
    offset: Array
    scale: Array

    @classmethod
    def fit(
        cls, x: Array, kind: NormalisationKind, shared: bool = False, channel_axis: int = -1
    ) -> Normaliser:
        """Fit on training samples (n, *sample_shape), one offset and scale per index of `channel_axis`
        (an axis of the sample); a constant one gets a scale of 1 so it never divides by zero.

        `shared` fits one offset and scale for all values, for values in the same units (image pixels):
        per-pixel scaling would blow up a border pixel that is almost always blank.
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
        return cls(kind, offset.astype(np.float32), scale.astype(np.float32))

    @classmethod
    def of(cls, normalisation: Normalisation, sample_shape: Sequence[int], channel_axis: int) -> Normaliser:
        """The normaliser a model's metadata records, shaped for samples of `sample_shape`."""
        shape = stat_shape(sample_shape, channel_axis)

        def shaped(values: list[float]) -> Array:
            entries = np.asarray(values, np.float32)
            # One entry per channel, or a single one shared by all.
            return np.broadcast_to(entries.reshape(shape if entries.size > 1 else ()), shape).copy()

        return cls(normalisation.kind, shaped(normalisation.offset), shaped(normalisation.scale))

    def transform(self, x: Array) -> Array:
        return ((x - self.offset) / self.scale).astype(np.float32)

    def inverse(self, x: Array) -> Array:
        return (x * self.scale + self.offset).astype(np.float32)


def stat_shape(sample_shape: Sequence[int], channel_axis: int) -> tuple[int, ...]:
    """The shape of a normaliser's offset for samples of `sample_shape`: the channel axis kept, others 1."""
    axis = channel_axis % len(sample_shape)
    return tuple(d if i == axis else 1 for i, d in enumerate(sample_shape))
