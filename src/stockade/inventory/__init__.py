"""Catalogers: one module per ecosystem, and the driver that runs them over an image."""

from stockade.inventory.driver import ALL_CATALOGERS, LayerCache, catalog, catalog_image

__all__ = ["ALL_CATALOGERS", "LayerCache", "catalog", "catalog_image"]
