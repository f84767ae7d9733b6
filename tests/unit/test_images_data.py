"""Image readers (Omniglot zip, MiniImagenet layout, npz cache) and N-way K-shot episodes (NME and ME)."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from assayfew.images.data import ImageSet, load_images, read_miniimagenet, read_omniglot_zip
from assayfew.images.episodes import EpisodeSampler
from tests.conftest import make_omniglot_zip


def png(size=(10, 12), colour=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_omniglot_reader_on_a_built_zip(tmp_path):
    path = make_omniglot_zip(tmp_path / "tiny.zip", n_classes=5, per_class=3)
    images = read_omniglot_zip(path, size=28)
    assert images.images.shape == (15, 28, 28, 1) and images.images.dtype == np.uint8
    assert images.classes == sorted(images.classes) and len(images.classes) == 5
    assert images.classes[0] == "Alpha0/character00"
    assert list(images.class_counts()) == [3] * 5
    # inverted: background (white in the file) is 0, strokes are bright
    assert np.median(images.images) == 0 and images.images.max() > 200
    # the drawings of one character resemble each other more than another character's
    a, b, c = (images.images[images.labels == k].astype(float) for k in (0, 0, 1))
    assert np.abs(a[0] - a[1]).mean() < np.abs(a[0] - c[0]).mean()


def test_cache_round_trip_without_pickles(tmp_path):
    path = make_omniglot_zip(tmp_path / "tiny.zip", n_classes=4, per_class=2)
    first = load_images(path, cache=tmp_path / "cache")
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    with np.load(cached[0], allow_pickle=False) as z:
        assert set(z.files) == {"images", "labels", "classes", "source"}
    again = load_images(path, cache=tmp_path / "cache")
    assert np.array_equal(first.images, again.images) and first.classes == again.classes


def test_corrupt_image_in_zip_is_named(tmp_path):
    path = make_omniglot_zip(tmp_path / "bad.zip", extra={"images_tiny/Alpha0/character00/9999_01.png": b"not png"})
    with pytest.raises(ValueError, match=r"bad\.zip:images_tiny/Alpha0/character00/9999_01\.png: not a readable"):
        read_omniglot_zip(path)


def test_unreadable_and_missing_zip(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is no zip")
    with pytest.raises(ValueError, match=r"junk\.zip: not a readable zip"):
        read_omniglot_zip(junk)
    with pytest.raises(FileNotFoundError, match="nothere.zip"):
        load_images(tmp_path / "nothere.zip")
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(ValueError, match="no images found"):
        read_omniglot_zip(empty)


def make_mini(root, n_classes=3, per_class=3, broken=None):
    (root / "images").mkdir(parents=True)
    for split in ("train", "test"):
        lines = ["filename,label"]
        for c in range(n_classes):
            for i in range(per_class):
                name = f"{split}_{c}_{i}.jpg"
                Image.new("RGB", (30, 20), (40 * c, 10 * i, 100)).save(root / "images" / name)
                lines.append(f"{name},n0{split}{c}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_miniimagenet_reader(tmp_path):
    root = make_mini(tmp_path / "mini")
    images = read_miniimagenet(root, "train", size=16)
    assert images.images.shape == (9, 16, 16, 3) and images.classes == ["n0train0", "n0train1", "n0train2"]
    assert list(images.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert images.images[3:6, :, :, 0].mean() > images.images[:3, :, :, 0].mean()  # class 1 is redder
    assert load_images(root, split="test", size=16, cache=tmp_path / "c").n_classes == 3
    with pytest.raises(ValueError, match="needs a split"):
        load_images(root)


def test_miniimagenet_bad_input_names_file_and_row(tmp_path):
    root = make_mini(tmp_path / "mini")
    (root / "images" / "train_1_0.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_1_0\.jpg \(listed in .*train\.csv, row 5\): image file missing"):
        read_miniimagenet(root, "train")
    (root / "images" / "test_0_1.jpg").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"test_0_1\.jpg \(listed in .*test\.csv, row 3\): not a readable image"):
        read_miniimagenet(root, "test")
    (root / "val.csv").write_text("file,cls\na.jpg,x\n")
    with pytest.raises(ValueError, match=r"val\.csv: expected a header 'filename,label'"):
        read_miniimagenet(root, "val")


def synthetic(n_classes=12, per_class=6) -> ImageSet:
    labels = np.repeat(np.arange(n_classes), per_class)
    images = (labels[:, None, None, None] * 10 + np.zeros((1, 4, 4, 1))).astype(np.uint8)
    return ImageSet(images, labels, [f"c{i}" for i in range(n_classes)], "synthetic")


def class_labels(sampler: EpisodeSampler, n: int) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = {}
    for _ in range(n):
        ep = sampler.episode()
        for label, cls in enumerate(ep.classes):
            seen.setdefault(int(cls), set()).add(label)
            assert set(sampler.images.labels[ep.support[ep.support_labels == label]]) == {cls}
            assert set(sampler.images.labels[ep.query[ep.query_labels == label]]) == {cls}
    return seen


def test_nme_sampler_keeps_each_class_on_one_label():
    images = synthetic()
    nme = EpisodeSampler(images, 4, 1, 2, nme=True, seed=0)
    seen = class_labels(nme, 200)
    assert len(seen) == 12  # every class is used ...
    assert all(len(labels) == 1 for labels in seen.values())  # ... always with the same label
    assert all(nme.label_of(c) == next(iter(labels)) for c, labels in seen.items())
    # groups partition the classes; a new sampler with another episode seed keeps the grouping
    assert sorted(np.concatenate(nme.groups).tolist()) == list(range(12))
    other = EpisodeSampler(images, 4, 1, 2, nme=True, seed=5, group_seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(nme.groups, other.groups))


def test_mutually_exclusive_sampler_shuffles_labels():
    seen = class_labels(EpisodeSampler(synthetic(), 4, 1, 2, nme=False, seed=0), 200)
    assert sum(len(labels) > 1 for labels in seen.values()) >= 10


def test_episodes_are_seeded_and_batched():
    images = synthetic()
    a, b = EpisodeSampler(images, 3, 2, 2, seed=7).batch(2), EpisodeSampler(images, 3, 2, 2, seed=7).batch(2)
    assert all(np.array_equal(getattr(a, k).numpy(), getattr(b, k).numpy()) for k in ("xs", "ys", "xq", "yq"))
    assert a.xs.shape == (2, 6, 16) and a.ys.shape == (2, 6) and a.xq.shape == (2, 6, 16)
    assert float(a.xs.max()) <= 1.0 and set(a.ys.unique().tolist()) == {0.0, 1.0, 2.0}


def test_too_few_images_for_k_shot_is_named():
    images = synthetic(n_classes=6, per_class=6)
    images.labels[:3] = 1  # class c0 keeps 3 images
    with pytest.raises(ValueError, match=r"synthetic: 1 class\(es\) have fewer than 5 images .* 'c0' with 3"):
        EpisodeSampler(images, 3, 1, 4)
    with pytest.raises(ValueError, match="fewer than 8-way"):
        EpisodeSampler(synthetic(n_classes=6), 8, 1, 1)


def make_runs_zip(path, n_runs=2, way=3, broken_line=False):
    """A zip in all_runs.zip's layout: runNN/training/classNN.png, runNN/test/itemNN.png, class_labels.txt."""
    with zipfile.ZipFile(path, "w") as zf:
        for r in range(1, n_runs + 1):
            lines = []
            for c in range(1, way + 1):
                zf.writestr(f"run{r:02d}/training/class{c:02d}.png", png((20, 20), (30 * c, 30 * c, 30 * c)))
                item = way + 1 - c  # test item k shows class way+1-k
                zf.writestr(f"run{r:02d}/test/item{item:02d}.png", png((20, 20), (30 * c, 30 * c, 30 * c)))
                lines.append(f"run{r:02d}/test/item{item:02d}.png run{r:02d}/training/class{c:02d}.png")
            if broken_line:
                lines.append("only-one-field")
            zf.writestr(f"run{r:02d}/class_labels.txt", "\n".join(sorted(lines)) + "\n")
    return path


def test_one_shot_runs_reader(tmp_path):
    from assayfew.images.data import is_runs_zip, read_omniglot_runs

    path = make_runs_zip(tmp_path / "all_runs.zip")
    assert is_runs_zip(path) and not is_runs_zip(make_omniglot_zip(tmp_path / "o.zip"))
    runs = read_omniglot_runs(path, size=8)
    assert [r.name for r in runs] == ["run01", "run02"]
    r = runs[0]
    assert r.support.shape == (3, 8, 8, 1) and r.query.shape == (3, 8, 8, 1)
    assert list(r.query_labels) == [2, 1, 0]  # item01 shows class03, ...
    assert np.array_equal(r.query[0], r.support[2])  # same picture, same label
    with pytest.raises(ValueError, match="one-shot runs zip"):
        read_omniglot_zip(path)
    with pytest.raises(ValueError, match=r"run01/class_labels\.txt, line 1: expected"):
        read_omniglot_runs(make_runs_zip(tmp_path / "bad.zip", broken_line=True))
