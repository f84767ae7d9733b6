"""Score a screening library with an assay's adapted model, streamed in chunks (memory bounded).

`open_library` reads a library file lazily (`.smi`, `.csv`, `.tsv`, `.sdf`, each optionally `.gz`);
`score_library` featurizes its chunks in a worker pool (`chem.featurize_chunks`) while the main process
scores the previous chunk with the adaptation (`AssayAdaptation.predict`, the same numbers as
`predict.adapt_and_predict` gives) and appends it to the output CSV. Every library row comes out, in input
order, with its own columns; rows that cannot be scored keep a status saying why.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import queue
import re
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from assayfew.adaptation import AssayAdaptation
from assayfew.chem import FingerprintSpec, OnBits, featurize_chunks
from assayfew.io import atomic_write
from assayfew.predict import IN_DOMAIN_SIMILARITY, SMILES_COLUMNS, detect_column, from_p
from assayfew.userfiles import InputError, _sdf_items, _sdf_smiles

#: Columns added to every library row (the assay's own output has these plus cv_prediction).
SCORE_COLUMNS = ("prediction", "uncertainty", "similarity_to_support", "in_domain", "status")
LIBRARY_FORMATS = {".smi": "smi", ".smiles": "smi", ".csv": "csv", ".tsv": "tsv", ".sdf": "sdf", ".sd": "sdf"}
CHUNK_SIZE = 4096


@dataclass
class LibraryChunk:
    rows: list[list[str]]  # the library's own fields, one list per row (len(columns) each)
    smiles: list[str]
    problems: list[str]  # "" or why the row's structure could not be read (before featurizing)


@dataclass
class LibrarySummary:
    n_rows: int
    n_invalid: int
    replaced_columns: list[str]


class Library:
    """A library file opened for streaming: its columns are known, its rows are read chunk by chunk."""

    def __init__(self, path: Path, smiles_col: str | None = None) -> None:
        self.path = Path(path)
        name = self.path.name.lower()
        base = name[:-3] if name.endswith(".gz") else name
        self.gzipped = name.endswith(".gz")
        self.format = LIBRARY_FORMATS.get(Path(base).suffix)
        if self.format is None:
            raise InputError(f"{self.path}: unknown library format; use one of "
                             f"{', '.join(sorted(set(LIBRARY_FORMATS)))} (optionally .gz)")
        if not self.path.exists():
            raise InputError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, not a library file")
        self.size = self.path.stat().st_size
        self._raw: IO[bytes] | None = None
        self.columns, self.smiles_index = self._read_header(smiles_col)

    # ------------------------------------------------------------------ reading text
    def _open(self) -> IO[bytes]:
        try:
            self._raw = open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        return gzip.GzipFile(fileobj=self._raw) if self.gzipped else self._raw

    def bytes_read(self) -> int:
        """How far into the file (bytes on disk) reading has got."""
        try:
            return self._raw.tell() if self._raw is not None and not self._raw.closed else self.size
        except (OSError, ValueError):
            return self.size

    def _lines(self) -> Iterator[tuple[int, str]]:
        """(line number, line) with clear errors for unreadable content (see `_line_blocks`)."""
        for first, block in self._line_blocks():
            yield from enumerate(block, start=first)

    def _line_blocks(self, hint: int = 1 << 20) -> Iterator[tuple[int, list[str]]]:
        """(number of the block's first line, its lines) for blocks of about `hint` bytes, decoded as UTF-8 a
        block at a time; an encoding error names its line."""
        line_no = 0
        with self._open() as stream:
            try:
                while block := stream.readlines(hint):
                    try:
                        lines = [data.decode("utf-8") for data in block]
                    except UnicodeDecodeError:
                        bad = next(i for i, data in enumerate(block) if not _decodes(data))
                        raise InputError(f"{self.path}, line {line_no + bad + 1}: not a UTF-8 text file") from None
                    if line_no == 0 and lines[0].startswith("\ufeff"):
                        lines[0] = lines[0][1:]
                    yield line_no + 1, lines
                    line_no += len(lines)
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise InputError(f"{self.path}: not a readable gzip file ({exc})") from None
            except OSError as exc:
                raise InputError(f"{self.path}: cannot read ({exc.strerror or exc})") from None

    def _read_header(self, smiles_col: str | None) -> tuple[list[str], int]:
        if self.format == "sdf":  # columns as `userfiles` reads an SDF: name, smiles, data items
            props = self._sdf_properties()
            return ["name" if "name" not in props else "sdf_name",
                    "smiles" if "smiles" not in props else "sdf_smiles", *props], 1
        lines = self._lines()
        try:
            first = next((line for _, line in lines if line.strip()), None)
        finally:
            lines.close()
        if first is None:
            raise InputError(f"{self.path}: empty file (no compounds)")
        if self.format == "smi":
            tokens = first.split()
            if tokens[0] not in SMILES_COLUMNS and smiles_col is None:
                self._smi_header = False
                return ["smiles", "name"], 0
            self._smi_header = True
            header = tokens
        else:
            try:
                header = next(csv.reader([first], delimiter="\t" if self.format == "tsv" else ","))
            except csv.Error as exc:
                raise InputError(f"{self.path}, line 1: not a readable header ({exc})") from None
            header = [h.strip() for h in header]
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise InputError(f"{self.path}: duplicate column name(s) in the header: {', '.join(duplicated)}")
        try:
            column = detect_column(header, SMILES_COLUMNS, smiles_col, "library smiles")
        except InputError as exc:
            raise InputError(f"{self.path}: {exc}") from None
        return header, header.index(column)

    def _sdf_records(self) -> Iterator[list[str]]:
        """Each SDF record's lines (without line ends), streamed."""
        record: list[str] = []
        for _, line in self._lines():
            if line.strip() == "$$$$":
                yield record
                record = []
            else:
                record.append(line.rstrip("\r\n"))
        if any(line.strip() for line in record):  # a last record without its $$$$
            yield record

    def _sdf_properties(self) -> list[str]:
        """Data item names of an SDF, in first-seen order (one pass over the file)."""
        names: dict[str, None] = {}
        n_records = 0
        for record in self._sdf_records():
            n_records += 1
            names.update(dict.fromkeys(_sdf_items(record)))
        if not n_records:
            raise InputError(f"{self.path}: empty file (no compounds)")
        return list(names)

    # ------------------------------------------------------------------ rows
    def chunks(self, size: int = CHUNK_SIZE) -> Iterator[LibraryChunk]:
        """The library's rows in chunks of `size`, in file order; blank lines are not rows."""
        rows = self._sdf_rows() if self.format == "sdf" else self._smi_rows() if self.format == "smi" \
            else self._csv_rows()
        while batch := list(itertools.islice(rows, size)):
            fields = [f for f, _ in batch]
            yield LibraryChunk(fields, [f[self.smiles_index] for f in fields], [p for _, p in batch])

    def _smi_rows(self) -> Iterator[tuple[list[str], str]]:
        n = len(self.columns)
        skipped_header = not self._smi_header
        for _, block in self._line_blocks():
            for line in block:
                text = line.rstrip()
                if not text:
                    continue
                if not skipped_header:
                    skipped_header = True
                    continue
                fields = text.split(None, n - 1)
                if line[0].isspace():  # a line that starts with white space has an empty SMILES field
                    fields = [""] + line.split(None, max(n - 2, 0))
                elif len(fields) > 1 and fields[1].startswith("|"):  # a CXSMILES extension belongs to the SMILES
                    fields = _join_cx(line, n)
                elif len(fields) == n:  # the usual line: fields already stripped
                    yield fields, ""
                    continue
                yield ([f.strip() for f in fields] + [""] * n)[:n], ""

    def _csv_rows(self) -> Iterator[tuple[list[str], str]]:
        n = len(self.columns)
        lines = (line for _, line in self._lines())
        reader = csv.reader(lines, delimiter="\t" if self.format == "tsv" else ",", strict=True)
        try:
            next(reader, None)  # the header
            for fields in reader:
                if not fields:  # a blank line
                    continue
                if len(fields) > n and any(f.strip() for f in fields[n:]):
                    raise InputError(f"{self.path}, line {reader.line_num}: {len(fields)} fields but the header "
                                     f"has {n}")
                yield (fields + [""] * n)[:n], ""
        except csv.Error as exc:
            raise InputError(f"{self.path}, line {reader.line_num}: not a readable CSV ({exc})") from None

    def _sdf_rows(self) -> Iterator[tuple[list[str], str]]:
        props = self.columns[2:]
        for number, lines in enumerate(self._sdf_records(), start=1):
            items = _sdf_items(lines)
            smiles, problem = _sdf_smiles(lines)
            yield ([lines[0].strip() if lines else "", smiles, *(items.get(p, "") for p in props)],
                   f"invalid structure in SDF record {number}: {problem}" if problem else "")


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _join_cx(line: str, n: int) -> list[str]:
    """Fields of a .smi line whose SMILES carries a CXSMILES extension ("SMILES |...| name ...")."""
    smiles, rest = line.split(None, 1)
    end = rest.find("|", 1)
    if end < 0:
        return line.split(None, n - 1)
    return [f"{smiles} {rest[:end + 1]}", *rest[end + 1:].split(None, max(n - 2, 0))]


def open_library(path: Path, smiles_col: str | None = None) -> Library:
    """Open a library file for streaming; a clear `InputError` naming the file when it cannot be used."""
    return Library(path, smiles_col)


class LibraryFeatures:
    """A library's chunks featurised ahead in a background thread (which feeds `chem.featurize_chunks`'s worker
    pool), so featurising can start before the assay is adapted (`assayfew predict --library` overlaps its
    start-up with it). Iterate once for (chunk, packed bits, reasons), in file order; errors reading the
    library come out of the iteration. `close()` (or leaving the `with` block) stops the work."""

    _END = object()

    def __init__(self, library: Library, spec: FingerprintSpec, *, standardize: bool, chunk_size: int = CHUNK_SIZE,
                 n_jobs: int | None = None, ahead: int = 2) -> None:
        self.library, self.spec, self.standardize = library, spec, standardize
        self.started = time.perf_counter()  # for rates: featurising may start well before scoring
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(chunk_size, n_jobs), daemon=True,
                                        name="assayfew-library-features")
        self._thread.start()

    def _run(self, chunk_size: int, n_jobs: int | None) -> None:
        try:
            chunks = _Tee(self.library.chunks(chunk_size))
            featurized = featurize_chunks((c.smiles for c in chunks), self.spec, standardize=self.standardize,
                                          n_jobs=n_jobs)
            try:
                for packed, reasons in featurized:
                    if not self._put((chunks.taken.popleft(), packed, reasons)):
                        return
            finally:
                featurized.close()  # cancels work in flight and shuts the pool down
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            self._put(self._END)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[LibraryChunk, np.ndarray, list[str]]]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> LibraryFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def score_library(adaptation: AssayAdaptation, library: Library | LibraryFeatures, out: Path | IO[str] | None, *,
                  units: str = "p", in_domain_similarity: float = IN_DOMAIN_SIMILARITY, chunk_size: int = CHUNK_SIZE,
                  n_jobs: int | None = None, model_threads: int | None = 1,
                  progress: Callable[[int, int], None] | None = None) -> LibrarySummary:
    """Score every row of `library` and write them, in input order, as CSV to `out` (a path: written to a
    temporary file beside it and renamed at the end, so `out` is either complete or untouched; a text
    stream: written as it goes). Structures are standardised (or not) as the assay's were.
    `progress(rows done, bytes of the file read)` after each chunk.

    n_jobs: featurisation worker processes (None = all cores; 1 = in-process). model_threads: torch threads
    for scoring while workers keep the other cores busy (None = torch's setting), restored afterwards.
    `library` may be a `LibraryFeatures` already featurising (then `chunk_size` and `n_jobs` are its own); it
    must use the adaptation's fingerprint and standardisation, and it is closed at the end.
    """
    if isinstance(library, LibraryFeatures):
        features = library
        if (features.spec, features.standardize) != (adaptation.model.spec, adaptation.standardize):
            features.close()
            raise ValueError("library featurised with another fingerprint or standardisation than the assay's")
        library = features.library
    else:
        features = None
    replaced = [c for c in library.columns if c in SCORE_COLUMNS]
    keep = [i for i, c in enumerate(library.columns) if c not in SCORE_COLUMNS]
    header = [library.columns[i] for i in keep] + list(SCORE_COLUMNS)
    bits = adaptation.model.spec.bits
    counts = {"rows": 0, "invalid": 0}

    def write(handle: IO[str]) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        source = features or LibraryFeatures(library, adaptation.model.spec, standardize=adaptation.standardize,
                                             chunk_size=chunk_size, n_jobs=n_jobs)
        with source:
            _write_rows(source, handle)

    def _write_rows(source: LibraryFeatures, handle: IO[str]) -> None:
        for chunk, packed, reasons in source:
            status = [p or (f"invalid SMILES: {r}" if r else "ok") for p, r in zip(chunk.problems, reasons)]
            ok = np.array([s == "ok" for s in status], dtype=bool)
            scored = iter(_score(adaptation, OnBits.from_packed(packed[ok], bits), units, in_domain_similarity))
            tails = [next(scored) if good else f",,,False,{_csv_row([text])}" for good, text in zip(ok, status)]
            handle.write(_csv_lines(chunk.rows if not replaced else [[f[i] for i in keep] for f in chunk.rows],
                                    tails))
            counts["rows"] += len(chunk.rows)
            counts["invalid"] += int((~ok).sum())
            if progress is not None:
                progress(counts["rows"], library.bytes_read())
        if counts["rows"] == 0:
            raise InputError(f"{library.path}: no compounds (only a header)")

    threads = torch.get_num_threads()
    torch.set_num_threads(model_threads if model_threads and n_jobs != 1 else threads)
    try:
        if out is None or not isinstance(out, (str, Path)):
            write(out if out is not None else sys.stdout)
        else:
            atomic_write(Path(out), lambda tmp: _write_file(tmp, write))
    finally:
        torch.set_num_threads(threads)
        if features is not None:
            features.close()
    return LibrarySummary(n_rows=counts["rows"], n_invalid=counts["invalid"], replaced_columns=replaced)


def _score(adaptation: AssayAdaptation, fps: OnBits, units: str, in_domain_similarity: float) -> list[str]:
    """The score cells (prediction, uncertainty, similarity_to_support, in_domain, status "ok") of valid rows
    as CSV text, one string per row."""
    prediction, uncertainty, similarity = adaptation.predict_bits(fps)
    in_domain = ["True" if d else "False" for d in (similarity >= in_domain_similarity).tolist()]
    return [f"{p},{u},{s},{d},ok" for p, u, s, d in zip(_floats(from_p(prediction, units)), _floats(uncertainty),
                                                        _floats(np.round(similarity, 4)), in_domain)]


def _floats(values: np.ndarray) -> list[str]:
    """As pandas writes float64 to CSV: shortest round-trip text, empty for NaN."""
    return [repr(v) if v == v else "" for v in np.asarray(values, dtype=np.float64).tolist()]


#: Characters after which csv.writer may quote a field (the delimiter, the quote, line breaks).
_MAY_NEED_QUOTES = re.compile(r'[,"\r\n]')


def _csv_row(fields: list[str]) -> str:
    """Fields as csv.writer writes them, without the line end (a lone empty field as part of a longer row)."""
    if fields == [""]:
        return ""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue()[:-1]


def _csv_lines(rows: list[list[str]], tails: list[str]) -> str:
    """CSV text of rows, each its own fields then `tails[i]` (cells already written as CSV): the text
    csv.writer writes; one check of the whole chunk, and one join, when no field may need quotes."""
    if _MAY_NEED_QUOTES.search("".join(itertools.chain.from_iterable(rows))) is None:
        return "".join([f"{','.join(fields)},{tail}\n" for fields, tail in zip(rows, tails)])
    return "".join([f"{_csv_row(fields)},{tail}\n" for fields, tail in zip(rows, tails)])


def _write_file(tmp: Path, write: Callable[[IO[str]], None]) -> None:
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        write(handle)


class _Tee:
    """Iterates over chunks and remembers those handed out but not yet taken back (the ones in flight)."""

    def __init__(self, source: Iterator[LibraryChunk]) -> None:
        self.source = source
        self.taken: deque[LibraryChunk] = deque()

    def __iter__(self) -> Iterator[LibraryChunk]:
        for chunk in self.source:
            self.taken.append(chunk)
            yield chunk
