"""Image classification data: an `ImageSet` (uint8 images + class index per image), its readers and cache.

Readers (images resized to a square size with Lanczos, cached as `.npz` without pickles):
- Omniglot zips (`images_background*.zip`, `images_evaluation.zip`, the `_small1/2` subsets):
  `<top>/<alphabet>/<character>/<drawing>.png`; a class is an alphabet/character directory. Read straight
  from the zip.
- Omniglot's one-shot runs (`all_runs.zip`, Lake et al.): `read_omniglot_runs`, for evaluation.
- MiniImagenet's standard layout: `<root>/images/<file>` and `<root>/{train,val,test}.csv` with columns
  `filename,label`.
Bad input (missing or unreadable zip, corrupt or missing image, malformed CSV) raises `ValueError` /
`FileNotFoundError` naming the file (and the CSV row).
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assayfew.io import atomic_write
from assayfew.paths import cache_dir

__all__ = ["ImageSet", "OneShotRun", "is_runs_zip", "read_omniglot_runs", "read_omniglot_zip", "read_miniimagenet", "load_images", "image_cache_key"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
CACHE_VERSION = 2  # bump when decoding changes


@dataclass
class ImageSet:
    """images (n, H, W, C) uint8; labels (n,) int64 class indices into `classes` (names); `source` for
    messages."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"{self.source}: images must be (n, H, W, C) uint8, got {self.images.shape} "
                             f"{self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.source}: one label per image needed")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"{self.source}: labels out of range of the {len(self.classes)} classes")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, classes: np.ndarray) -> ImageSet:
        """The images of `classes` (indices), relabelled 0..len(classes)-1 in that order."""
        classes = np.asarray(classes, dtype=np.int64)
        remap = np.full(self.n_classes, -1, dtype=np.int64)
        remap[classes] = np.arange(classes.size)
        rows = np.flatnonzero(remap[self.labels] >= 0)
        return ImageSet(self.images[rows], remap[self.labels[rows]], [self.classes[c] for c in classes], self.source)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.n_classes)

    def save_npz(self, path: Path) -> None:
        def write(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, images=self.images, labels=self.labels, classes=np.array(self.classes, dtype=str),
                         source=np.array(self.source))

        atomic_write(path, write)

    @classmethod
    def load_npz(cls, path: Path) -> ImageSet:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["images"], z["labels"].astype(np.int64), [str(c) for c in z["classes"]],
                           str(z["source"]))
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a readable image cache ({e})") from e


def _decode(data: bytes, size: int, channels: int, where: str) -> np.ndarray:
    """One image file's bytes -> (size, size, channels) uint8 (Lanczos resize)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{where}: not a readable image (unknown format or corrupt file)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: not a readable image ({e})") from None
    return arr.reshape(size, size, channels)


def read_omniglot_zip(path: Path, size: int = 28) -> ImageSet:
    """All drawings of an Omniglot zip (classes = alphabet/character directories, sorted), read straight
    from the zip and resized to size×size grey levels, inverted as in MAML (ink = 255, background = 0, so
    a convolution's zero padding matches the background)."""
    path = Path(path)
    with _open_zip(path, "Omniglot zip") as zf:
        if any(n.endswith("class_labels.txt") for n in zf.namelist()):
            raise ValueError(f"{path}: a one-shot runs zip (all_runs.zip), not a set of classes: evaluate on it "
                             f"with `assayfew images evaluate --data {path.name}`")
        members = sorted(n for n in zf.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
        by_class: dict[str, list[str]] = {}
        for name in members:
            parts = name.split("/")
            if len(parts) < 3:
                raise ValueError(f"{path}: {name} is not in an <alphabet>/<character>/ directory")
            by_class.setdefault("/".join(parts[-3:-1]), []).append(name)
        if not by_class:
            raise ValueError(f"{path}: no images found (expected <alphabet>/<character>/*.png)")
        classes = sorted(by_class)
        images, labels = [], []
        for c, cls in enumerate(classes):
            for name in by_class[cls]:
                images.append(_member_image(zf, path, name, size))
                labels.append(c)
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), classes, str(path))


@dataclass
class OneShotRun:
    """One of Lake et al.'s one-shot classification runs: one training image per class (label = its
    position), test images with the label of their class."""

    name: str
    support: np.ndarray  # (n_classes, H, W, 1) uint8
    query: np.ndarray  # (n_test, H, W, 1) uint8
    query_labels: np.ndarray  # (n_test,) int64


def _open_zip(path: Path, what: str) -> zipfile.ZipFile:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: not a readable zip file ({e})") from None


def _member_image(zf: zipfile.ZipFile, path: Path, name: str, size: int) -> np.ndarray:
    try:
        data = zf.read(name)
    except KeyError:
        raise ValueError(f"{path}:{name}: listed but not in the zip") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path}:{name}: cannot be read from the zip ({e})") from None
    return 255 - _decode(data, size, 1, f"{path}:{name}")


def read_omniglot_runs(path: Path, size: int = 28) -> list[OneShotRun]:
    """Omniglot's `all_runs.zip` (Lake et al., 2015): 20 runs of 20-way within-alphabet one-shot
    classification, `runNN/training/classNN.png`, `runNN/test/itemNN.png` and `runNN/class_labels.txt`
    ("test image  training image" per line). Grey levels inverted as `read_omniglot_zip`."""
    path = Path(path)
    runs = []
    with _open_zip(path, "Omniglot runs zip") as zf:
        tables = sorted(n for n in zf.namelist() if n.endswith("class_labels.txt"))
        if not tables:
            raise ValueError(f"{path}: no run*/class_labels.txt (not an Omniglot one-shot runs zip)")
        for table in tables:
            run = table.rsplit("/", 1)[0]
            pairs = []
            for line_no, line in enumerate(zf.read(table).decode("utf-8", "replace").splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"{path}:{table}, line {line_no}: expected 'test-image training-image'")
                pairs.append(parts)
            classes = sorted({train for _, train in pairs})
            index = {c: i for i, c in enumerate(classes)}
            support = np.stack([_member_image(zf, path, c, size) for c in classes])
            query = np.stack([_member_image(zf, path, test, size) for test, _ in pairs])
            runs.append(OneShotRun(run, support, query, np.array([index[t] for _, t in pairs], dtype=np.int64)))
    return runs


def read_miniimagenet(root: Path, split: str, size: int = 84) -> ImageSet:
    """MiniImagenet split (`train`, `val` or `test`): `<root>/<split>.csv` (columns filename,label) with the
    files in `<root>/images/`; classes sorted by label name; RGB resized to size×size."""
    root = Path(root)
    table = root / f"{split}.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no such MiniImagenet split file")
    rows: list[tuple[str, str]] = []
    with open(table, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["filename", "label"]:
            raise ValueError(f"{table}: expected a header 'filename,label', got {header}")
        for line, row in enumerate(reader, start=2):
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{table}, row {line}: expected 'filename,label', got {row}")
            rows.append((row[0].strip(), row[1].strip()))
    if not rows:
        raise ValueError(f"{table}: no images listed")
    classes = sorted({label for _, label in rows})
    index = {c: i for i, c in enumerate(classes)}
    images = []
    for line, (name, _) in enumerate(rows, start=2):
        file = root / "images" / name
        try:
            data = file.read_bytes()
        except OSError:
            raise FileNotFoundError(f"{file} (listed in {table}, row {line}): image file missing") from None
        images.append(_decode(data, size, 3, f"{file} (listed in {table}, row {line})"))
    return ImageSet(np.stack(images), np.asarray([index[l] for _, l in rows], dtype=np.int64), classes, str(table))


def is_runs_zip(path: Path) -> bool:
    """Whether `path` is a zip of one-shot runs (all_runs.zip layout)."""
    path = Path(path)
    if path.suffix != ".zip" or not path.is_file():
        return False
    with _open_zip(path, "zip") as zf:
        return any(n.endswith("class_labels.txt") for n in zf.namelist())


def image_cache_key(path: Path, *parts: object) -> str:
    """Cache name for a source file or directory: its resolved path, size and modification time, plus
    `parts` (e.g. image size, split)."""
    path = Path(path).resolve()
    st = path.stat()
    text = "|".join(map(str, (path, st.st_size, st.st_mtime_ns, *parts)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_images(source: Path, *, split: str | None = None, size: int | None = None,
                cache: Path | None = None) -> ImageSet:
    """An image set from an Omniglot zip (default size 28), a MiniImagenet root + split (default size 84)
    or an `.npz` written by `ImageSet.save_npz`; decoded sets are cached under `cache` (default
    `<cache_dir>/images`)."""
    source = Path(source)
    if source.suffix == ".npz":
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such image cache")
        return ImageSet.load_npz(source)
    if source.is_dir():
        if split is None:
            raise ValueError(f"{source}: a MiniImagenet directory needs a split (train, val or test)")
        size = 84 if size is None else size
        table = source / f"{split}.csv"
        key_path, read = table, lambda: read_miniimagenet(source, split, size)
    else:
        size = 28 if size is None else size
        key_path, read = source, lambda: read_omniglot_zip(source, size)
    if not key_path.exists():
        raise FileNotFoundError(f"{key_path}: no such file")
    cache = (cache_dir() / "images") if cache is None else Path(cache)
    cached = cache / f"{key_path.stem}-{size}-{image_cache_key(key_path, size, CACHE_VERSION)}.npz"
    if cached.is_file():
        return ImageSet.load_npz(cached)
    images = read()
    images.save_npz(cached)
    return images
