"""Read container images: archives, OCI layouts, root filesystems and registries, one layer at a time."""

from stockade.image.layer import Entry, LayerError, Limits, decompressed, is_whiteout, iter_tar_entries
from stockade.image.manifest import Image, ImageError, Layer
from stockade.image.source import iter_rootfs, open_image

__all__ = [
    "Entry",
    "Image",
    "ImageError",
    "Layer",
    "LayerError",
    "Limits",
    "decompressed",
    "is_whiteout",
    "iter_rootfs",
    "iter_tar_entries",
    "open_image",
]
