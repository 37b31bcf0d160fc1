"""The data set for train.py: the dogImages layout, checked before training, and the evaluation sampler.

``<root>/{train,valid,test}/NNN.Breed_Name/*.jpg``. Before a job spends GPU time, ``check_layout``
checks that every split exists and that all splits have the same class folders, and ``load_split``
that no class folder is empty; each violation is a ``DataSetError`` whose message names the split
and the classes. Images that cannot be decoded raise ``UnreadableImageError`` naming the file.

A JPEG much larger than the network's input is decoded at a reduced scale (``draft_size``, from
``model.decode_size``), as the endpoint does: libjpeg's 1/2, 1/4 or 1/8 scale, never below that short side.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from images import upright_rgb
from PIL import Image, ImageFile
from torch.utils.data import Sampler
from torchvision import datasets

SPLITS = ("train", "valid", "test")

log = logging.getLogger(__name__)


class DataSetError(Exception):
    """The data set cannot be trained on; the message (one line) says which split, class or file."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker's exception reaches the main process as ``type(text)``, where text is
        # "Caught <type> in DataLoader worker ... Original Traceback ... <module>.<type>: <message>";
        # keep only the original message.
        super().__init__(message.rsplit(f"{type(self).__name__}: ", 1)[-1].strip())


class UnreadableImageError(DataSetError):
    """An image file that PIL cannot decode."""


def class_folders(root: Path) -> list[str]:
    """The class folder names under ``root``, sorted; hidden folders (``.ipynb_checkpoints``) are not classes."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def load_rgb(path: str, draft_size: int | None = None) -> Image.Image:
    """Decode an image file as upright 8-bit RGB, as the endpoint does, or raise ``UnreadableImageError``.

    With ``draft_size``, a JPEG whose sides are both at least twice that is decoded at the smallest of
    1/2, 1/4 and 1/8 scale that keeps both sides at least ``draft_size`` (other formats: full size).

    A truncated JPEG is decoded as far as its data goes, with a warning: dogImages has one
    (``train/098.Leonberger/Leonberger_06571.jpg``), and failing a whole job on it helps nobody.
    """
    try:
        try:
            return _decode(path, draft_size, allow_truncated=False)
        except OSError as err:
            if not str(err).startswith("image file is truncated"):
                raise
        log.warning("image %s is truncated; using the part that decodes", path)
        return _decode(path, draft_size, allow_truncated=True)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(f"cannot read image {path}: {err}") from err


def _decode(path: str, draft_size: int | None, *, allow_truncated: bool) -> Image.Image:
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, allow_truncated
    try:
        with Image.open(path) as image:
            if draft_size:
                image.draft(image.mode, (draft_size, draft_size))
            image.load()
            # The endpoint's conversion (images.upright_rgb): EXIF orientation, transparency on white,
            # 16-bit grayscale scaled; the network sees the same pixels in training and serving.
            return upright_rgb(image)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


class DogImageFolder(datasets.ImageFolder):
    """``ImageFolder`` whose classes are ``class_folders`` and whose images load with ``load_rgb``."""

    def __init__(self, root: Path, transform: Callable | None, draft_size: int | None = None) -> None:
        loader = functools.partial(load_rgb, draft_size=draft_size) if draft_size else load_rgb
        super().__init__(root, transform=transform, loader=loader, allow_empty=True)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = class_folders(Path(directory))
        return classes, {name: index for index, name in enumerate(classes)}


def check_layout(roots: dict[str, Path]) -> list[str]:
    """The class names, after checking that every split exists and has the same class folders as train.

    Raises ``DataSetError`` naming the split (and the classes that differ).
    """
    for split in SPLITS:
        if not roots[split].is_dir():
            raise DataSetError(f"the {split} split is missing: {roots[split]} is not a folder")
    classes = {split: class_folders(roots[split]) for split in SPLITS}
    for split in SPLITS:
        if not classes[split]:
            raise DataSetError(f"the {split} split has no class folders in {roots[split]}")
    for split in SPLITS[1:]:
        missing = sorted(set(classes["train"]) - set(classes[split]))
        extra = sorted(set(classes[split]) - set(classes["train"]))
        if missing or extra:
            differences = [
                f"{label} {', '.join(names)}" for label, names in (("lacks", missing), ("adds", extra)) if names
            ]
            raise DataSetError(f"the {split} split's classes differ from train's: it {' and '.join(differences)}")
    return classes["train"]


def load_split(split: str, root: Path, transform: Callable | None, draft_size: int | None = None) -> DogImageFolder:
    """One split's images; a class folder with no image file raises ``DataSetError`` naming split and class."""
    dataset = DogImageFolder(root, transform, draft_size)
    counts = Counter(dataset.targets)
    empty = [name for index, name in enumerate(dataset.classes) if not counts[index]]
    if empty:
        raise DataSetError(f"the {split} split has class folders with no image file: {', '.join(empty)}")
    return dataset


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: disjoint shards that together hold each sample once.

    For evaluation: unlike ``DistributedSampler`` it never pads a shard with repeated samples, so
    losses and correct counts summed over ranks count every sample exactly once.
    """

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
