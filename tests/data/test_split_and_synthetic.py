import hashlib

import numpy as np

from catdog_lightning.data.scan import scan_folder
from catdog_lightning.data.split import stratified_split
from catdog_lightning.data.synthetic import ensure_builtin_dataset, generate_dataset


def test_split_is_stable_for_a_seed_and_changes_with_it():
    labels = [0] * 70 + [1] * 30
    a = stratified_split(labels, [0.1], seed=5)
    b = stratified_split(labels, [0.1], seed=5)
    c = stratified_split(labels, [0.1], seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_split_is_stratified_disjoint_and_complete():
    labels = np.array([0] * 70 + [1] * 30)
    train, val, test = stratified_split(labels, [0.1, 0.2], seed=0)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    assert (labels[val] == 1).sum() == 3 and (labels[val] == 0).sum() == 7
    assert (labels[test] == 1).sum() == 6 and (labels[test] == 0).sum() == 14


def test_adding_dogs_does_not_move_cats_between_splits():
    before = stratified_split([0] * 50 + [1] * 50, [0.2], seed=1)
    after = stratified_split([0] * 50 + [1] * 50 + [0] * 10, [0.2], seed=1)
    cats = lambda idx: sorted(i for i in idx if 50 <= i < 100)  # noqa: E731
    assert cats(before[1]) == cats(after[1])


def digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic_balanced_and_in_class_folders(tmp_path):
    a = generate_dataset(tmp_path / "a", n_train=12, n_test=4, seed=1)
    b = generate_dataset(tmp_path / "b", n_train=12, n_test=4, seed=1)
    c = generate_dataset(tmp_path / "c", n_train=12, n_test=4, seed=2)
    assert digest(a) == digest(b) != digest(c)
    train = scan_folder(a / "train")
    assert len(train.files) == 12 and sum(f.label for f in train.files) == 6
    assert len(scan_folder(a / "test").files) == 4
    assert {p.name for p in (a / "train").iterdir()} == {"cat", "dog"}


def test_builtin_dataset_is_made_once_and_reused(tmp_path):
    root = ensure_builtin_dataset(tmp_path / "builtin", n_train=6, n_test=2)
    stamp = (root / "train" / "cat" / "cat_00000.jpg").stat().st_mtime_ns
    ensure_builtin_dataset(tmp_path / "builtin", n_train=6, n_test=2)
    assert (root / "train" / "cat" / "cat_00000.jpg").stat().st_mtime_ns == stamp
    ensure_builtin_dataset(tmp_path / "builtin", n_train=8, n_test=2)  # other settings: regenerated
    assert len(list((root / "train").rglob("*.jpg"))) == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"
