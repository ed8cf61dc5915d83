"""Minimal Ray-API adapters for peers that are not Ray-compatible
(`pool`: stdlib process pool, `dask`: dask.distributed)."""
