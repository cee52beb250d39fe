"""Data: adapters that open sources as cubes, catalogs, ingest into zarr, and embedded synthetic data."""

from geostp.data.catalog import Catalog, open_catalog
from geostp.store import ingest, open_cube

__all__ = ["Catalog", "open_catalog", "ingest", "open_cube"]
