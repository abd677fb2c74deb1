import os

from helpers import write_image

from catdog_lightning.data.scan import CAT, DOG, folder_label, name_label, scan_folder


def labels_by_name(result):
    return {os.path.basename(f.path): f.label for f in result.files}


def test_class_folders_any_case_and_plural(tmp_path):
    for folder, name in [("cat", "a.jpg"), ("Cats", "b.png"), ("DOG", "c.jpeg"), ("dogs", "d.bmp")]:
        write_image(tmp_path / "train" / folder / name)
    result = scan_folder(tmp_path / "train")
    assert labels_by_name(result) == {"a.jpg": CAT, "b.png": CAT, "c.jpeg": DOG, "d.bmp": DOG}
    assert result.unlabelled == []


def test_flat_kaggle_names(tmp_path):
    for name in ["cat.1.jpg", "dog.2.jpg", "My_Cat.PNG", "DOG.3.JPG"]:
        write_image(tmp_path / name)
    assert labels_by_name(scan_folder(tmp_path)) == {"cat.1.jpg": 1, "dog.2.jpg": 0, "My_Cat.PNG": 1, "DOG.3.JPG": 0}


def test_unlabelled_files_are_skipped_and_listed_never_labelled_dog(tmp_path):
    write_image(tmp_path / "cat.1.jpg")
    write_image(tmp_path / "dog.1.jpg")
    write_image(tmp_path / "horse.jpg")
    write_image(tmp_path / "catdog.jpg")  # says both: ambiguous
    result = scan_folder(tmp_path)
    assert sorted(labels_by_name(result)) == ["cat.1.jpg", "dog.1.jpg"]
    assert sorted(os.path.basename(p) for p in result.unlabelled) == ["catdog.jpg", "horse.jpg"]


def test_nearest_class_folder_wins_over_file_name(tmp_path):
    write_image(tmp_path / "dog" / "cat_toy.jpg")
    write_image(tmp_path / "cats" / "sub" / "x.jpg")
    write_image(tmp_path / "cat" / "dog" / "y.jpg")
    assert labels_by_name(scan_folder(tmp_path)) == {"cat_toy.jpg": DOG, "x.jpg": CAT, "y.jpg": DOG}
    assert folder_label(["holiday", "Cats"]) == CAT and folder_label(["x"]) is None
    assert name_label("dog.7.JPG") == DOG and name_label("hotdog_and_cat.jpg") is None


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    write_image(tmp_path / "cat" / "a.jpg")
    write_image(tmp_path / "dog" / "b.webp")
    write_image(tmp_path / "cat" / ".ipynb_checkpoints" / "a-checkpoint.jpg")
    write_image(tmp_path / ".hidden" / "cat" / "c.jpg")
    write_image(tmp_path / "cat" / ".d.jpg")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / "model.gif").write_bytes(b"GIF89a")
    result = scan_folder(tmp_path)
    assert sorted(labels_by_name(result)) == ["a.jpg", "b.webp"]
    assert result.unlabelled == []


def test_symlink_loop_is_walked_once(tmp_path):
    write_image(tmp_path / "cat" / "a.jpg")
    write_image(tmp_path / "dog" / "b.jpg")
    os.symlink(tmp_path, tmp_path / "cat" / "loop")  # cat/loop -> the root, a cycle
    os.symlink(tmp_path / "cat" / "self.jpg", tmp_path / "cat" / "self.jpg")  # a file link to itself
    result = scan_folder(tmp_path)
    assert sorted(labels_by_name(result)) == ["a.jpg", "b.jpg"]
    assert [os.path.basename(p) for p in result.unreadable] == ["self.jpg"]


def test_order_is_sorted_and_stable(tmp_path):
    for i in (3, 1, 2):
        write_image(tmp_path / "cat" / f"{i}.jpg")
    paths = [f.path for f in scan_folder(tmp_path).files]
    assert paths == sorted(paths)


def test_a_fifo_named_like_a_photo_is_skipped_not_read(tmp_path):
    """Opening a FIFO blocks until someone writes to it: the scan and the decoder must never try."""
    from catdog_lightning.data.decode import decode_many

    write_image(tmp_path / "cat" / "real.jpg")
    fifo = tmp_path / "cat" / "x.jpg"
    os.mkfifo(fifo)
    result = scan_folder(tmp_path)
    assert [f.path for f in result.files] == [str(tmp_path / "cat" / "real.jpg")]
    assert result.unreadable == [str(fifo)]
    images, kept, failures = decode_many([str(fifo), str(tmp_path / "cat" / "real.jpg")], 16, workers=1)
    assert kept == [1] and "not a regular file" in failures[0].reason
