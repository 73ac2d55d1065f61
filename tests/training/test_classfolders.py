"""Class names <-> image-folder names: one path segment each, never hidden, and back again."""

from __future__ import annotations

import pytest

from training.classfolders import class_folder, class_of_folder
from training.datasets import DATASETS


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("7", "7"),
        ("Trouser", "Trouser"),
        ("Ankle boot", "Ankle boot"),
        ("T-shirt/top", "T-shirt%2Ftop"),
        ("..", "%2E."),
        (".hidden", "%2Ehidden"),
        ("50%", "50%25"),
        ("a\\b", "a%5Cb"),
        ("tab\there", "tab%09here"),
        ("a:b", "a%3Ab"),
    ],
)
def test_a_class_name_becomes_one_safe_folder_name_and_back(name: str, folder: str) -> None:
    assert class_folder(name) == folder
    assert class_of_folder(folder) == name
    assert "/" not in folder and not folder.startswith(".")


def test_every_catalogued_class_has_a_distinct_folder() -> None:
    for dataset in DATASETS.values():
        folders = [class_folder(name) for name in dataset.class_names]
        assert len(set(folders)) == len(folders)
        assert [class_of_folder(f) for f in folders] == list(dataset.class_names)


def test_an_empty_class_name_has_no_folder() -> None:
    with pytest.raises(ValueError, match="empty"):
        class_folder("")
