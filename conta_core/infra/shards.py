"""Split per-image work into shards so N workers / cluster jobs share it."""

from __future__ import annotations


def shard_ids(ids: list[str], shard: int, num_shards: int) -> list[str]:
    """Ids of shard `shard` (0-based) out of `num_shards`: a strided slice of the sorted ids.

    Striding keeps shards balanced when image sizes correlate with id order.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} out of range for {num_shards} shards")
    return sorted(ids)[shard::num_shards]
