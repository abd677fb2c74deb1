"""Folders of photos -> decoded tensors -> batches. Knows nothing of models or training."""

from .datamodule import CatDogDataModule
from .datasets import DecodedImageDataset
from .decode import decode_image
from .overlap import SplitOverlapWarning
from .scan import CAT, DOG, scan_folder
from .skipped import SkippedFilesWarning
from .synthetic import ensure_builtin_dataset, generate_dataset

__all__ = [
    "CAT",
    "DOG",
    "CatDogDataModule",
    "DecodedImageDataset",
    "SkippedFilesWarning",
    "SplitOverlapWarning",
    "decode_image",
    "ensure_builtin_dataset",
    "generate_dataset",
    "scan_folder",
]
