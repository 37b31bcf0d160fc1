"""Small image sets in the dogImages layout, generated for tests: the generator lives in dogbreeds.local.imagesets."""

from __future__ import annotations

from dogbreeds.local.imagesets import DEFAULT_CLASSES, SPLITS, image_for_class, make_image_set

__all__ = ["DEFAULT_CLASSES", "SPLITS", "image_for_class", "make_image_set"]
