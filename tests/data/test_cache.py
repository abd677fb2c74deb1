"""The decode cache: hit on a second run, rebuilt on any change or damage, never half-written."""

import os

import pytest
import torch
from helpers import pixels, write_image
from PIL import Image

import catdog_lightning.data.cache as cache_mod
from catdog_lightning.data.cache import cache_path, load_or_decode
from catdog_lightning.data.scan import scan_folder


@pytest.fixture
def folder(tmp_path):
    for i in range(6):
        Image.fromarray(pixels(i)).save(write_image(tmp_path / "photos" / ("cat" if i % 2 else "dog") / f"{i}.jpg"))
    return tmp_path / "photos"


def load(folder, cache_dir):
    return load_or_decode(scan_folder(folder).files, folder, 16, True, cache_dir)


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = cache_mod.decode_files

    def counting(files, *args, **kwargs):
        calls.append(len(files))
        return real(files, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "decode_files", counting)
    return calls


def test_second_load_is_a_cache_hit_with_identical_pixels(folder, tmp_path, count_decodes):
    first = load(folder, tmp_path / "c")
    second = load(folder, tmp_path / "c")
    assert count_decodes == [6]
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.paths == second.paths


@pytest.mark.parametrize("change", ["modify", "add", "delete"])
def test_any_file_change_invalidates(folder, tmp_path, count_decodes, change):
    load(folder, tmp_path / "c")
    target = folder / "cat" / "1.jpg"
    if change == "modify":
        Image.fromarray(pixels(99)).save(target)
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    elif change == "add":
        Image.fromarray(pixels(7)).save(folder / "cat" / "new.jpg")
    else:
        target.unlink()
    again = load(folder, tmp_path / "c")
    assert not again.from_cache and len(count_decodes) == 2
    assert len(again.labels) == {"modify": 6, "add": 7, "delete": 5}[change]
    assert len(list((tmp_path / "c").iterdir())) == 1, "a changed folder reuses its slot, no stale files pile up"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_pixel_byte", "flip_label", "swap_paths"])
def test_damaged_cache_is_detected_and_rebuilt(folder, tmp_path, count_decodes, damage):
    # A copy: the cache is memory-mapped, and damaging the file in place (this test does; the cache's own
    # writes never do: they rename a new file into place) would pull the pages out from under a mapping.
    good = load(folder, tmp_path / "c").images.clone()
    path = cache_path(tmp_path / "c", folder, 16, True)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a torch file at all")
    else:
        blob = torch.load(path, weights_only=True)
        if damage == "flip_pixel_byte":
            blob["images"][0, 0, 0, 0] ^= 1  # one bit of one pixel: only the checksum can tell
        elif damage == "flip_label":
            blob["labels"][0] ^= 1  # a cat becomes a dog: training would learn a wrong label unnoticed
        else:
            blob["paths"][0], blob["paths"][1] = blob["paths"][1], blob["paths"][0]
        torch.save(blob, path)
    rebuilt = load(folder, tmp_path / "c")
    assert not rebuilt.from_cache and len(count_decodes) == 2
    assert torch.equal(rebuilt.images, good)
    assert load(folder, tmp_path / "c").from_cache


def test_killed_write_leaves_the_old_cache_and_no_temp_file(folder, tmp_path, monkeypatch):
    load(folder, tmp_path / "c")
    path = cache_path(tmp_path / "c", folder, 16, True)
    before = path.read_bytes()
    Image.fromarray(pixels(42)).save(folder / "dog" / "extra.jpg")  # forces a rewrite

    def dies_mid_write(obj, fh):
        fh.write(b"half a cache")
        raise KeyboardInterrupt  # the process is stopped between write and rename

    monkeypatch.setattr(cache_mod.torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        load(folder, tmp_path / "c")
    assert path.read_bytes() == before
    assert [p.name for p in (tmp_path / "c").iterdir()] == [path.name]


def test_unreadable_files_are_remembered_by_the_cache(folder, tmp_path):
    (folder / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    first = load(folder, tmp_path / "c")
    second = load(folder, tmp_path / "c")
    assert second.from_cache
    assert [f.path for f in first.failures] == [f.path for f in second.failures] == [str(folder / "cat" / "broken.jpg")]


def test_cache_off_decodes_every_time(folder, count_decodes):
    load(folder, None)
    load(folder, None)
    assert count_decodes == [6, 6]


def test_clean_up_touches_only_its_own_temporaries(tmp_path):
    from catdog_lightning.storage.atomic import TMP_SUFFIX, remove_stale_temporaries

    mine = tmp_path / f".decoded-abc.pt.x1{TMP_SUFFIX}"
    others = [tmp_path / ".someone-elses.tmp", tmp_path / ".decoded-abc.pt.x2.tmp", tmp_path / f".notes{TMP_SUFFIX}"]
    for path in [mine, *others]:
        path.write_bytes(b"x")
        os.utime(path, (0, 0))  # very old
    assert remove_stale_temporaries(tmp_path, older_than_s=3600, names=("decoded-", "features-")) == [mine]
    assert all(p.exists() for p in others)
