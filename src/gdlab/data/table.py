"""A table of your own: a ``.csv`` file (or ``.npy``/``.npz`` arrays), one sample per row, one column the target.

Reading stays in numpy and the standard library's ``csv`` (no pandas). A ``.csv`` file whose target is
named must have a header row; with a column index the header is optional (the first row is a header when
one of its cells is not a number).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdlab.data.base import InMemoryDataModule, split_sizes
from gdlab.data.standardize import Standardizer
from gdlab.errors import ArgumentError

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".npy", ".npz")
# An integer target with at most this many distinct values is taken for class labels when task is null.
MAX_INFERRED_CLASSES = 20
TASKS = ("regression", "classification")


class Table:
    """The numbers of a file as a ``(rows, columns)`` float64 array, with column names where it has them."""

    def __init__(
        self, values: np.ndarray, names: list[str] | None, source: str, lines: list[int] | None = None
    ) -> None:
        self.values, self.names, self.source = values, names, source
        self.lines = lines  # each row's line in a text file (for messages); None: rows counted from 0

    def where(self, row: int) -> str:
        return f"row {row}" if self.lines is None else f"line {self.lines[row]}"

    def column(self, key: int | str, argument: str) -> int:
        """The position of column ``key`` (a name from the header, or an index; negative counts from the end)."""
        width = self.values.shape[1]
        if isinstance(key, str):
            if self.names is None:
                raise ArgumentError(
                    argument,
                    f"Invalid {argument}: {key!r} is a column name but {self.source} has no header row "
                    f"(give a column index from 0 to {width - 1}, or add a header)",
                )
            if key not in self.names:
                raise ArgumentError(
                    argument,
                    f"Invalid {argument}: {key!r} is not a column of {self.source} "
                    f"(its columns: {listing(self.names)})",
                )
            return self.names.index(key)
        if not -width <= key < width:
            raise ArgumentError(
                argument,
                f"Invalid {argument}: column {key} is not in {self.source}, which has {width} columns "
                f"(0 to {width - 1})",
            )
        return key % width

    def label(self, col: int) -> str:
        return repr(self.names[col]) if self.names else str(col)


# How many column names a message lists before it counts the rest (a header of 10^6 columns was 8.9 MB).
LISTED = 12


def listing(names: list[str]) -> str:
    """Names joined by commas, the first ``LISTED`` and then how many more."""
    shown = ", ".join(names[:LISTED])
    return shown if len(names) <= LISTED else f"{shown}, ... ({len(names)} in all)"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(path: Path, header: bool | None, delimiter: str) -> Table:
    """A csv file's cells as floats; ``header=None``: the first row is a header if a cell of it is no number."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            numbered = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as err:
        raise ArgumentError(
            "path",
            f"Invalid path: {path.name} is not UTF-8 text (byte {err.object[err.start : err.start + 1]!r} at "
            f'offset {err.start}): save it as UTF-8 ("CSV UTF-8" in a spreadsheet)',
        ) from None
    lines, rows = [n for n, _ in numbered], [row for _, row in numbered]
    if not rows:
        raise ArgumentError("path", f"Invalid path: {path.name} is empty (no rows)")
    if header is None:
        header = not all(_is_number(cell) for cell in rows[0])
    names = [cell.strip() for cell in rows[0]] if header else None
    body, lines = (rows[1:], lines[1:]) if header else (rows, lines)
    width = len(rows[0])
    for i, row in enumerate(body):
        if len(row) != width:
            raise ArgumentError(
                "path",
                f"Invalid path: line {lines[i]} of {path.name} has {len(row)} cells, the first row {width} "
                f"(is delimiter={delimiter!r} right?)",
            )
    cells = np.array([[cell.strip() for cell in row] for row in body], dtype=str).reshape(len(body), width)
    try:
        values = cells.astype(np.float64)
    except ValueError:
        values = None
    table = Table(values if values is not None else np.empty((len(body), width)), names, path.name, lines)
    if values is None:  # find the first cell that is not a number, to name it
        for i, j in np.ndindex(cells.shape):
            if cells[i, j] == "" or not _is_number(cells[i, j]):
                what = "is empty" if cells[i, j] == "" else f"holds {str(cells[i, j])!r}, not a number"
                raise ArgumentError(
                    "path",
                    f"Invalid path: {table.where(i)}, column {table.label(j)} of {path.name} {what} "
                    "(every cell must be a number: fill it, or leave the column out of features)",
                )
    return table


def read_arrays(path: Path) -> Table:
    """A ``.npy`` 2-d array, or a ``.npz`` holding either one 2-d array or named 1-d/2-d arrays (columns)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ArgumentError(
            "path", f"Invalid path: {path.name} is not a numeric array file ({err})"
        ) from None
    if isinstance(loaded, np.ndarray):
        arrays = {"": loaded}
    else:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    if len(arrays) == 1:
        (values,) = arrays.values()
        if values.ndim != 2:
            raise ArgumentError(
                "path",
                f"Invalid path: {path.name} holds an array of shape {values.shape}; it must be 2-d (rows, columns)",
            )
        table = Table(_numeric(values, path.name), None, path.name)
    else:  # named arrays: each 1-d array is one column, each 2-d array as many columns as it has
        names, columns = [], []
        for name, array in arrays.items():
            array = array.reshape(len(array), -1)
            columns.append(array)
            names += [name] if array.shape[1] == 1 else [f"{name}[{k}]" for k in range(array.shape[1])]
        if len({len(c) for c in columns}) > 1:
            raise ArgumentError(
                "path",
                f"Invalid path: the arrays in {path.name} have different lengths; each row is a sample",
            )
        table = Table(_numeric(np.concatenate(columns, axis=1), path.name), names, path.name)
    return table


def _numeric(values: np.ndarray, source: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
        raise ArgumentError("path", f"Invalid path: {source} holds {values.dtype} values, not numbers")
    return values.astype(np.float64)


class TableDataModule(InMemoryDataModule):
    """Rows of a table are samples: ``target`` is the column to predict, ``features`` the columns to predict
    it from (default: all others). Rows are shuffled with ``seed`` and split into train/val/test; features are
    standardised with training-split statistics (kept in :meth:`state_dict`); regression targets keep their
    units.

    Args:
        path: a ``.csv`` file, or ``.npy``/``.npz`` arrays.
        target: the target column: its name in the header, or its index (0 is the first column, -1 the last).
        features: the input columns (names or indices); ``None``: every column but the target.
        task: ``regression`` or ``classification``; ``None``: classification when the target holds
            integers with at most ``MAX_INFERRED_CLASSES`` distinct values (logged), else regression.
        header: whether a ``.csv`` file's first row holds column names; ``None``: yes when ``target`` or a
            feature is a name, else when a cell of the first row is not a number.
        delimiter: the ``.csv`` cell separator.
        standardize: standardise the features; false: the model sees the numbers as they are.
        val_fraction, test_fraction, batch_size, shuffle, shuffle_seed, seed, eval_batch_size: as in
            ``LinearDataModule`` (``seed`` fixes which rows go to which split).
    """

    def __init__(
        self,
        path: str,
        target: int | str = -1,
        features: Sequence[int | str] | None = None,
        task: str | None = None,
        header: bool | None = None,
        delimiter: str = ",",
        standardize: bool = True,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        batch_size: int | None = 64,
        shuffle: bool = True,
        shuffle_seed: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            shuffle_seed=shuffle_seed,
            eval_batch_size=eval_batch_size,
        )
        if task is not None and task not in TASKS:
            raise ArgumentError(
                "task", f"Invalid task: {task!r} (one of {', '.join(TASKS)}, or null to infer it)"
            )
        if not path:
            raise ArgumentError("path", "Invalid path: empty (give the .csv, .npy or .npz file to train on)")
        split_sizes(1000, val_fraction, test_fraction)  # the fractions' own checks, before the file is read
        self.path, self.target, self.feature_columns = Path(path).expanduser(), target, features
        self.requested_task, self.header, self.delimiter = task, header, delimiter
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.standardize = standardize
        self.standardizer = Standardizer(dims=(0,))
        self.raw: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # split -> (raw features float64, target)
        self.classes: list[float] = []
        self._task = task or "regression"
        self.feature_names: list[str] = []

    def read(self) -> Table:
        path = self.path
        if path.suffix.lower() not in SUFFIXES:
            raise ArgumentError("path", f"Invalid path: {path.name} is not a {', '.join(SUFFIXES)} file")
        if not path.is_file():
            raise ArgumentError(
                "path",
                f"No such file: {str(path)!r} (relative paths start from the directory you run in: "
                f"{Path.cwd()})",
            )
        if path.suffix.lower() != ".csv":
            return read_arrays(path)
        named = isinstance(self.target, str) or any(isinstance(f, str) for f in self.feature_columns or ())
        return read_csv(path, True if named and self.header is None else self.header, self.delimiter)

    def load(self) -> None:
        """Read the file once: choose the columns, check the values, infer the task, shuffle and split."""
        table = self.read()
        y_col = table.column(self.target, "target")
        if self.feature_columns is None:
            x_cols = [c for c in range(table.values.shape[1]) if c != y_col]
        else:
            x_cols = [table.column(f, "features") for f in self.feature_columns]
        if not x_cols or y_col in x_cols:
            raise ArgumentError(
                "features",
                f"Invalid features: {'none left' if not x_cols else 'they include the target'} "
                f"(the model needs input columns other than the target {table.label(y_col)})",
            )
        values = table.values[:, [*x_cols, y_col]]
        bad = np.argwhere(~np.isfinite(values))
        if len(bad):
            i, j = bad[0]
            col = [*x_cols, y_col][j]
            raise ArgumentError(
                "path",
                f"Invalid path: {table.where(i)}, column "
                f"{table.label(col)} of {table.source} is {values[i, j]}: fill or drop the rows with missing values "
                f"({len(bad)} cell{'s' if len(bad) > 1 else ''} in all)",
            )
        x, y = values[:, :-1], values[:, -1]
        try:
            sizes = split_sizes(len(values), self.val_fraction, self.test_fraction)
        except ArgumentError as err:
            if err.argument != "n_samples":
                raise
            n_val, n_test = round(len(values) * self.val_fraction), round(len(values) * self.test_fraction)
            raise ArgumentError(
                "path",
                f"Invalid path: {table.source} has {len(values)} rows, too few for the splits (train="
                f"{len(values) - n_val - n_test}, val={n_val}, test={n_test}; each needs >= 2)",
            ) from None
        self._task = self.infer_task(y, table.label(y_col))
        if self._task == "classification":
            self.classes, labels = np.unique(y, return_inverse=True)
            self.classes = self.classes.tolist()
            target = torch.from_numpy(labels.reshape(-1)).long()
        else:
            target = torch.from_numpy(y).reshape(-1, 1)
        self.feature_names = [table.names[c] if table.names else str(c) for c in x_cols]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        x_all, n_train, n_val = torch.from_numpy(x), sizes[0], sizes[1]
        parts = {
            "train": order[:n_train],
            "val": order[n_train : n_train + n_val],
            "test": order[n_train + n_val :],
        }
        self.raw = {name: (x_all[idx], target[idx]) for name, idx in parts.items()}

    @property
    def task(self) -> str:  # type: ignore[override]  # known once the file is read
        self.setup()
        return self._task

    def infer_task(self, y: np.ndarray, label: str) -> str:
        integral = bool(np.all(y == np.round(y)))
        if self.requested_task == "classification" and not integral:
            raise ArgumentError(
                "task",
                f"Invalid task: 'classification' but the target column {label} holds non-integer values",
            )
        if self.requested_task is not None:
            return self.requested_task
        n_values = len(np.unique(y))
        if integral and n_values <= MAX_INFERRED_CLASSES:
            log.info(
                "task: classification (the target %s holds %d integer values); pass task='regression' to fit "
                "it as a number",
                label,
                n_values,
            )
            return "classification"
        return "regression"

    def build(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self.raw:
            self.load()
        if self.standardize and not self.standardizer.fitted:
            self.standardizer.fit(self.raw["train"][0])  # training split only
        splits = {}
        for name, (x, y) in self.raw.items():
            feats = self.standardizer(x) if self.standardize else x
            splits[name] = (feats.float(), y if self._task == "classification" else y.float())
        return splits

    @property
    def num_outputs(self) -> int:
        self.setup()
        return len(self.classes) if self._task == "classification" else 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees for raw feature rows ``x`` (``(n, d)``, the file's units): standardised with the
        training statistics, as in training (``eval.py predict_input=...`` uses it)."""
        self.setup()
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, len(self.feature_names))
        return (self.standardizer(x) if self.standardize else x).float()

    def original_weights(self, w: torch.Tensor, b: torch.Tensor | float) -> dict[str, torch.Tensor]:
        """A linear model's ``(w, b)`` on the standardised features, as weights on the file's own columns:
        ``y = b + sum_k w_k (x_k - mean_k) / std_k`` gives ``w_k / std_k`` and ``b - sum_k w_k mean_k / std_k``."""
        self.setup()
        w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
        b = torch.as_tensor(b, dtype=torch.float64).reshape(())
        if not self.standardize:
            return {"w": w, "b": b}
        mean, std = self.standardizer.mean.reshape(-1), self.standardizer.std.reshape(-1)
        return {"w": w / std, "b": b - (w * mean / std).sum()}

    def state_dict(self) -> dict[str, Any]:
        return {"standardizer": self.standardizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training statistics (e.g. from a checkpoint) and re-transform built splits."""
        self.standardizer.load_state_dict(state_dict.get("standardizer", {}))
        self.__dict__.pop("_closed_form", None)
        if self.splits:
            self.splits = self.build()
