"""Images listed in a table: a CSV (or Parquet) file of image path and label, the Kaggle and fastai
convention (`ImageDataLoaders.from_csv`), with an optional split column.

    file,label[,split]
    cats/001.jpg,cat,train
    dogs/7.jpg,dog,val

Paths are relative to the table's folder unless `root` is given (`suffix` is appended, for tables of
ids such as Kaggle's). With a split column (train, val or valid, test), the splits are as given: without
test, val is the test split and the validation split is held out from train (`val_fraction`), as for
an image folder. Without one, the rows are split here by `split_fractions`. A row whose file is
missing or whose label is empty is reported with its row number and skipped, never a crash later.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from transferlab.data.base import ImageClassificationDataModule
from transferlab.data.folder import carve_validation
from transferlab.data.scan import scan
from transferlab.data.splits import Split
from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)

SPLIT_VALUES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of a .csv (or .tsv) or .parquet file, as strings."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError:
            raise TransferlabError(f"data.csv={path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = parquet.read_table(path).to_pylist()
        except Exception as error:  # noqa: BLE001 - pyarrow's errors: not a Parquet file, cut short
            raise TransferlabError(f"data.csv={path}: not a readable Parquet file ({error})") from None
        return [{k: "" if v is None else str(v) for k, v in row.items()} for row in table]
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: a spreadsheet's BOM
            sample = handle.read(4096)
            handle.seek(0)
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample else csv.excel
            return [dict(row) for row in csv.DictReader(handle, dialect=dialect)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TransferlabError(f"data.csv={path}: cannot be read as a CSV file ({error})") from None


class TableDataModule(ImageClassificationDataModule):
    def __init__(
        self,
        csv: str | None = None,
        root: str | None = None,
        path_column: str | None = None,
        label_column: str | None = None,
        split_column: str | None = "split",
        suffix: str = "",
        val_fraction: float = 0.2,
        scan_cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not csv:
            raise TransferlabError("data=csv needs data.csv=PATH: a CSV or Parquet file of image path and label")
        if not 0 < val_fraction < 1:
            raise TransferlabError(f"data.val_fraction={val_fraction}: choose a fraction of train between 0 and 1")
        self.table = Path(csv).expanduser()
        self.root = Path(root).expanduser() if root else self.table.parent
        self.path_column, self.label_column, self.split_column = path_column, label_column, split_column
        self.suffix, self.val_fraction = suffix, val_fraction
        self.scan_cache_dir = Path(scan_cache_dir).expanduser() if scan_cache_dir else None

    def describe(self) -> str:
        return f"the table {self.table}"

    def columns(self, rows: list[dict[str, str]]) -> tuple[str, str, str | None]:
        names = list(rows[0])
        path = self.path_column or names[0]
        label = self.label_column or (names[1] if len(names) > 1 else "")
        for key, column in (("path_column", path), ("label_column", label)):
            if column not in names:
                raise TransferlabError(
                    f"data.{key}={column}: no such column in {self.table}; its columns are {', '.join(names)}"
                )
        return path, label, self.split_column if self.split_column in names else None

    def find_splits(self) -> tuple[list[str], dict[str, Split]]:
        if not self.table.is_file():
            raise TransferlabError(f"data.csv={self.table}: no such file")
        rows = read_table(self.table)
        if not rows:
            raise TransferlabError(f"data.csv={self.table}: no rows")
        path_key, label_key, split_key = self.columns(rows)
        entries, problems, first_row = [], [], {}
        for number, row in enumerate(rows, start=2):  # row 1 is the header, as a spreadsheet numbers it
            name, label = (row.get(path_key) or "").strip(), (row.get(label_key) or "").strip()
            split = SPLIT_VALUES.get((row.get(split_key) or "").strip().lower()) if split_key else None
            path = self.root / f"{name}{self.suffix}"
            if not name or not label:
                problems.append(f"row {number}: empty {'path' if not name else 'label'}")
            elif split_key and split is None:
                problems.append(f"row {number}: split {row.get(split_key)!r} is not train, val or test")
            elif not path.is_file():
                problems.append(f"row {number}: no file {path}")
            elif path in first_row:  # twice: it would train and test on one image, or count twice
                problems.append(f"row {number}: the same file as row {first_row[path]}")
            else:
                first_row[path] = number
                entries.append((path, label, split, number))
        usable = set(scan(self.root, [e[0] for e in entries], self.scan_cache_dir)) if entries else set()
        problems += [f"row {n}: {path} is not a readable image" for path, _, _, n in entries if path not in usable]
        problems.sort(key=lambda text: int(text.split(":")[0].removeprefix("row ")))
        entries = [entry[:3] for entry in entries if entry[0] in usable]
        if problems:
            log.warning(
                "%s: skipped %d of %d rows: %s%s",
                self.table,
                len(problems),
                len(rows),
                "; ".join(problems[:5]),
                f"; and {len(problems) - 5} more" if len(problems) > 5 else "",
            )
        if not entries:
            raise TransferlabError(f"data.csv={self.table}: no usable rows (first problems: {'; '.join(problems[:3])})")
        names = sorted({label for _, label, _ in entries})
        index = {name: i for i, name in enumerate(names)}
        if not split_key:
            pool = Split([p for p, _, _ in entries], [index[c] for _, c, _ in entries], f"the table {self.table}")
            return names, {"all": pool}
        splits = {}
        for name in ("train", "val", "test"):
            mine = [(p, c) for p, c, s in entries if s == name]
            if mine:
                source = f"the rows of {self.table} with {split_key}={name}"
                splits[name] = Split([p for p, _ in mine], [index[c] for _, c in mine], source)
        if "train" not in splits or ("val" not in splits and "test" not in splits):
            raise TransferlabError(
                f"data.csv={self.table}: its {split_key} column needs train rows and val or test rows "
                f"(found {', '.join(splits) or 'none'})"
            )
        if "test" not in splits:
            # Choosing the checkpoint on the images that report the test accuracy would make it optimistic.
            splits["test"] = splits.pop("val")
            splits["test"].source += " (no test rows: val is the test split, never used to choose)"
        if "val" not in splits:
            where = Path(f"{self.table} ({split_key}=train)")
            splits["train"], splits["val"] = carve_validation(
                splits["train"], names, self.val_fraction, self.seed, where
            )
        return names, splits
