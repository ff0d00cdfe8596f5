"""The landing zone: where upstream systems (here, the simulator) drop raw files.

Layout: ``{landing_dir}/{table}/{week_key}.parquet`` — one file per raw table per landing week.
CSV files (``.csv``, UTF-8 with or without a byte-order mark, LF or CRLF line ends) are accepted
too, read as text so that the contracts judge every value.

Files are read in chunks of a bounded number of rows (:func:`read_chunks`), so that validating a
file of any size needs memory for one chunk only. A file that cannot be read at all raises
:class:`UnreadableFile`, which names the file and the reason; callers turn it into a contract
violation (rule ``file_readable(<reason>)``).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

SUFFIXES = (".parquet", ".csv")
PARQUET_MAGIC = b"PAR1"
_BLOCK = 8 << 20  # bytes per read of the UTF-8 scan


@dataclass(frozen=True)
class LandingFile:
    table: str
    week_key: str | None
    path: Path


class UnreadableFile(ValueError):
    """A landing file that cannot be read as a table: empty, not UTF-8, not Parquet, malformed CSV."""

    def __init__(self, path: Path, reason: str, detail: str) -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: unreadable ({reason}): {detail}")

    @property
    def rule(self) -> str:
        return f"file_readable({self.reason})"


def landing_path(landing_dir: Path, table: str, week_key: str) -> Path:
    return landing_dir / table / f"{week_key}.parquet"


def find_file(landing_dir: Path, table: str, week_key: str) -> Path | None:
    for suffix in SUFFIXES:
        path = landing_dir / table / f"{week_key}{suffix}"
        if path.exists():
            return path
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_utf8(path: Path) -> None:
    """Raise :class:`UnreadableFile` at the first byte that is not UTF-8 (streamed, bounded memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    with path.open("rb") as handle:
        while True:
            block = handle.read(_BLOCK)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                at = max(err.start, 0)
                line = lines + block[:at].count(b"\n") + 1
                byte = block[at] if at < len(block) else None
                what = f"byte 0x{byte:02x}" if byte is not None else "a truncated character"
                raise UnreadableFile(
                    path, "encoding", f"not UTF-8: {what} at offset {offset + at} (line {line})"
                ) from None
            if not block:
                return
            offset += len(block)
            lines += block.count(b"\n")


def _check_parquet(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC or size < 12:
        where = "header" if head != PARQUET_MAGIC else "footer (truncated file?)"
        raise UnreadableFile(path, "not_parquet", f"no Parquet magic bytes in the {where}")


def _scan(path: Path) -> pl.LazyFrame:
    if path.suffix == ".csv":
        return pl.scan_csv(path, infer_schema=False, null_values=[""], raise_if_empty=False)
    if path.suffix == ".parquet":
        return pl.scan_parquet(path)
    raise UnreadableFile(path, "file_type", f"unsupported file type {path.suffix!r}; use .parquet or .csv")


def read_chunks(path: Path, chunk_rows: int = 100_000) -> Iterator[pl.DataFrame]:
    """The rows of one landing file, ``chunk_rows`` at a time.

    Yields at least one frame: a file with a header (or a Parquet schema) and no rows yields one
    empty frame with its columns. Raises :class:`UnreadableFile` (before the first chunk, or
    between chunks when the damage is further into the file).
    """
    if path.suffix not in SUFFIXES:
        raise UnreadableFile(
            path, "file_type", f"unsupported file type {path.suffix!r}; use .parquet or .csv"
        )
    try:
        if not path.is_file():
            raise UnreadableFile(path, "not_a_file", "not a regular file")
        if path.stat().st_size == 0:
            raise UnreadableFile(path, "empty", "the file has 0 bytes (no header, no rows)")
        if path.suffix == ".csv":
            _check_utf8(path)
        else:
            _check_parquet(path)
    except OSError as err:
        raise UnreadableFile(path, "os_error", _first_line(err)) from err
    reason = "malformed_csv" if path.suffix == ".csv" else "corrupt_parquet"
    scan = _scan(path)
    try:
        columns = scan.collect_schema()
        if not columns:
            raise UnreadableFile(path, "empty", "no header line")
        any_rows = False
        for chunk in scan.collect_batches(chunk_size=chunk_rows):
            if chunk.height:
                any_rows = True
                yield chunk
        if not any_rows:
            yield pl.DataFrame(schema=columns)
    except UnreadableFile:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as err:
        raise UnreadableFile(path, reason, _first_line(err)) from err


def read_file(path: Path) -> pl.DataFrame:
    """Read one whole landing file (small files; validation reads in chunks with :func:`read_chunks`)."""
    return pl.concat(list(read_chunks(path)), how="vertical")


def discover(folder: Path, tables: tuple[str, ...]) -> list[LandingFile]:
    """Raw files in ``folder``: ``{table}/{week}.parquet|csv`` or ``{table}.parquet|csv``."""
    found: list[LandingFile] = []
    for table in tables:
        for suffix in SUFFIXES:
            single = folder / f"{table}{suffix}"
            if single.exists():
                found.append(LandingFile(table, None, single))
        sub = folder / table
        if sub.is_dir():
            for path in sorted(sub.iterdir()):
                if path.suffix in SUFFIXES:
                    found.append(LandingFile(table, path.stem, path))
    return found


def landed_weeks(landing_dir: Path, table: str) -> list[str]:
    sub = landing_dir / table
    if not sub.is_dir():
        return []
    return sorted({p.stem for p in sub.iterdir() if p.suffix in SUFFIXES})
