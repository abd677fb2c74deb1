import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import pixels, write_image
from PIL import Image

from catdog_lightning.data import CatDogDataModule, SkippedFilesWarning, SplitOverlapWarning
from catdog_lightning.data.augment import flip_and_crop
from catdog_lightning.errors import ConfigError, DataError


def make_folder(root, n_cat=10, n_dog=10, size=(30, 30)):
    for i in range(n_cat):
        Image.fromarray(pixels(i, size)).save(write_image(root / "cat" / f"c{i}.jpg"))
    for i in range(n_dog):
        Image.fromarray(pixels(100 + i, size)).save(write_image(root / "dog" / f"d{i}.jpg"))
    return root


def test_train_and_test_folders(tiny_dataset, tmp_path):
    dm = CatDogDataModule(str(tiny_dataset), image_size=16, batch_size=8, cache_dir=str(tmp_path / "c"))
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (36, 4, 16)
    assert not dm.test_is_carved
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 16, 16)
    assert set(labels.tolist()) <= {0, 1}
    assert "train 36 / val 4" in dm.summary


def test_no_test_folder_carves_a_test_split_and_says_so(tmp_path):
    make_folder(tmp_path / "d" / "train", 20, 20)
    dm = CatDogDataModule(str(tmp_path / "d"), image_size=8, val_fraction=0.1, test_fraction=0.2, cache=False)
    dm.setup()
    assert dm.test_is_carved
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (28, 4, 8)
    assert "carved from train/" in dm.summary


def test_val_split_is_the_same_on_every_run(tiny_dataset, tmp_path):
    def val_pixels():
        dm = CatDogDataModule(str(tiny_dataset), image_size=8, cache_dir=str(tmp_path / "c"))
        dm.setup()
        return dm.val_set.images

    assert torch.equal(val_pixels(), val_pixels())


def test_channel_stats_are_the_training_splits_own(tiny_dataset, tmp_path):
    dm = CatDogDataModule(str(tiny_dataset), image_size=16, cache_dir=str(tmp_path / "c"), normalize=True)
    dm.setup()
    mean, std = dm.channel_stats()
    pixels = dm.train_set.images.numpy().astype(np.float64) / 255  # training split only, not val or test
    assert np.allclose(mean.numpy(), pixels.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(std.numpy(), pixels.std(axis=(0, 2, 3)), atol=1e-6)
    everything = torch.cat([dm.train_set.images, dm.val_set.images]).double().div(255)
    assert not torch.allclose(mean.double(), everything.mean((0, 2, 3)), atol=1e-6)


def test_float_conversion_and_augmentation_only_when_training(tiny_dataset):
    dm = CatDogDataModule(str(tiny_dataset), image_size=16, augment=True, cache=False)
    batch = (torch.full((4, 3, 16, 16), 255, dtype=torch.uint8), torch.ones(4, dtype=torch.long))
    images, _ = dm.on_after_batch_transfer(batch, 0)  # no trainer: not training, no augmentation
    assert images.dtype == torch.float32 and torch.all(images == 1.0)

    class Training:
        training = True

    dm.trainer = Training()
    gradient = torch.linspace(0, 255, 16).to(torch.uint8).expand(4, 3, 16, 16).contiguous()
    torch.manual_seed(0)
    augmented, _ = dm.on_after_batch_transfer((gradient, torch.ones(4)), 0)
    assert augmented.shape == (4, 3, 16, 16)
    assert not torch.allclose(augmented, gradient.float() / 255)


def test_min_crop_scale_sets_how_far_the_crop_zooms():
    # Each column holds its own index, so a row of the output tells which source columns it shows.
    columns = torch.arange(32, dtype=torch.float32).expand(256, 3, 32, 32).contiguous()
    torch.manual_seed(0)
    whole = flip_and_crop(columns, min_scale=1.0)  # no crop: every image is itself or its mirror
    mirrored = columns.flip(-1)
    same = [torch.allclose(a, columns[0], atol=1e-4) or torch.allclose(a, mirrored[0], atol=1e-4) for a in whole]
    assert all(same)

    def spans(min_scale):  # the range of source columns each crop covers (+1: the pixel widths at the ends)
        out = flip_and_crop(columns, min_scale=min_scale)[:, 0, 0]
        return out.max(-1).values - out.min(-1).values + 1

    mild, strong = spans(0.8), spans(0.5)
    assert mild.min() >= 0.8 * 32 - 1 and strong.min() >= 0.5 * 32 - 1
    assert strong.min() < 0.6 * 32  # some crops zoom in further than the mild setting ever does


def test_skipped_files_are_counted_in_one_warning_each(tmp_path):
    root = make_folder(tmp_path / "d" / "train", 6, 6)
    (root / "cat" / "broken.jpg").write_bytes(b"nope")
    (root / "dog" / "empty.png").write_bytes(b"")
    Image.fromarray(pixels(5)).save(root / "mystery.jpg")
    dm = CatDogDataModule(str(tmp_path / "d"), image_size=8, val_fraction=0.2, cache=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedFilesWarning)]
    assert len(messages) == 2
    assert "Skipped 1 file(s) whose folder and name say neither" in messages[0] and "mystery.jpg" in messages[0]
    assert "Skipped 2 unreadable image(s)" in messages[1]
    assert "broken.jpg" in messages[1] and "empty.png" in messages[1]
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 12


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val_fraction": 1.5}, "--data.val_fraction"),
        ({"val_fraction": -0.1}, "--data.val_fraction"),
        ({"test_fraction": 0.0}, "--data.test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "below 1"),
        ({"batch_size": 0}, "--data.batch_size"),
        ({"image_size": 2}, "--data.image_size"),
        ({"min_crop_scale": 0.0}, "--data.min_crop_scale"),
        ({"min_crop_scale": 1.5}, "--data.min_crop_scale"),
    ],
)
def test_invalid_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CatDogDataModule("x", **kwargs)


def test_data_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CatDogDataModule(str(tmp_path / "nope")).setup()
    (tmp_path / "notrain").mkdir()
    with pytest.raises(DataError, match="no train/ folder"):
        CatDogDataModule(str(tmp_path / "notrain")).setup()
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="No labelled images"):
        CatDogDataModule(str(tmp_path / "empty"), cache=False).setup()
    make_folder(tmp_path / "cats" / "train", 5, 0)
    with pytest.raises(DataError, match="only cat images"):
        CatDogDataModule(str(tmp_path / "cats"), cache=False).setup()
    (tmp_path / "junk" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "junk" / "train" / "cat" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="None of the 1 images"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CatDogDataModule(str(tmp_path / "junk"), cache=False).setup()


def test_a_folder_of_every_bad_file_kind_trains_on_everything_readable(tmp_path):
    """The run goes on: each odd file is either read (and counted in) or skipped and named."""
    import os

    import numpy as np
    from test_decode import png_header_only

    cat, dog = tmp_path / "d" / "train" / "cat", tmp_path / "d" / "train" / "dog"
    readable = {
        cat / "alpha.png": Image.new("RGBA", (20, 20), (255, 0, 0, 128)),
        cat / "grey.jpg": Image.new("L", (20, 20), 90),
        cat / "palette.png": Image.new("RGB", (20, 20), (0, 90, 0)).convert("P"),
        cat / "cmyk.jpg": Image.new("CMYK", (20, 20), (0, 200, 200, 0)),
        cat / "sixteen.png": Image.fromarray(np.full((9, 9), 40000, dtype=np.uint16)),
        dog / "one.png": Image.new("RGB", (1, 1), (5, 5, 5)),
        dog / "wide.jpg": Image.new("RGB", (4000, 3), (9, 9, 9)),
        dog / "Hund_犬.JPG": Image.new("RGB", (30, 30), (1, 2, 3)),
        dog / "UPPER.PNG": Image.new("RGB", (30, 30), (3, 2, 1)),
    }
    for path, img in readable.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    (cat / "zero.jpg").write_bytes(b"")
    (cat / "text.jpg").write_text("hello")
    (dog / "truncated.jpg").write_bytes((dog / "Hund_犬.JPG").read_bytes()[:200])
    png_header_only(dog / "bomb.png", 50000, 50000)
    os.symlink(tmp_path / "d" / "train", cat / "loop")
    (cat / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (5, 5)).save(cat / ".ipynb_checkpoints" / "alpha-checkpoint.png")
    dm = CatDogDataModule(str(tmp_path / "d"), image_size=8, val_fraction=0.2, test_fraction=0.2, cache=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
    used = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert used == len(readable) == 9
    (message,) = [str(w.message) for w in caught if issubclass(w.category, SkippedFilesWarning)]
    assert message.startswith("Skipped 4 unreadable image(s)")
    for name in ["zero.jpg", "text.jpg", "truncated.jpg", "bomb.png"]:
        assert name in message


def test_test_photos_that_were_trained_on_are_counted_in_one_warning(tmp_path):
    root = tmp_path / "leaky"
    make_folder(root / "train")
    make_folder(root / "test", n_cat=4, n_dog=4)  # the first 4 cats and dogs of train/, under the same names
    shutil.copy(root / "train" / "cat" / "c7.jpg", root / "test" / "cat" / "renamed.jpg")  # and a copy
    for name in ("c5.jpg", "c6.jpg"):  # two that are not copies
        Image.fromarray(pixels(500 + len(name), (30, 30))).save(root / "test" / "cat" / name)
    dm = CatDogDataModule(str(root), image_size=16, cache=False)
    with pytest.warns(SplitOverlapWarning) as caught:
        dm.prepare_data()
        dm.setup("fit")
    overlap = [str(w.message) for w in caught if issubclass(w.category, SplitOverlapWarning)]
    originals = {f"c{i}.jpg" for i in (0, 1, 2, 3, 7)} | {f"d{i}.jpg" for i in range(4)}
    trained = len(originals & {Path(p).name for p in dm.train_set.paths})  # the rest may be in validation
    assert trained >= 7 and len(overlap) == 1
    assert overlap[0].startswith(f"{trained} of the 11 test images have the same pixels as images trained on")
    strict = CatDogDataModule(str(root), image_size=16, cache=False, strict_splits=True)
    with pytest.raises(DataError, match=f"{trained} of the 11 test images .* --data.strict_splits is on"):
        strict.prepare_data()
        strict.setup("fit")


def test_the_same_folder_as_train_and_test_is_all_overlap(tmp_path):
    root = tmp_path / "twice"
    make_folder(root / "train")
    (root / "test").symlink_to(root / "train")
    dm = CatDogDataModule(str(root), image_size=16, cache=False)
    with pytest.warns(SplitOverlapWarning, match="18 of the 20 test images"):  # 2 are validation images
        dm.prepare_data()
        dm.setup("fit")


def test_distinct_photos_raise_no_overlap_warning(tiny_dataset, tmp_path):
    dm = CatDogDataModule(str(tiny_dataset), image_size=16, cache_dir=str(tmp_path / "c"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitOverlapWarning)
        dm.prepare_data()
        dm.setup("fit")
