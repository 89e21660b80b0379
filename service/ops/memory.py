"""The memory a worker may need above its size after loading the models, from the settings that bound it.

Request bodies held at once are bounded by AE_MAX_BUFFERED_BYTES (`ByteBudget`), and each exists up to three
times while it is read (the server's buffer, the message handed over, the joined body). JSON bodies larger
than a megabyte are parsed at most `LARGE_BODY_SLOTS` at a time, each into at most AE_MAX_JSON_VALUES
Python numbers or lists (about 40 bytes apiece with their list slots, counted as 64). Arrays and answers of
admitted requests are small beside these (a 1024 x 784 float32 batch is 3 MiB). `memory_ceiling_mib` adds
these up, with room for the allocator's own slack; docs/reliability.md shows the measurement it is checked
against.
"""

from __future__ import annotations

from service.settings import Settings

__all__ = ["BODY_COPIES", "BYTES_PER_JSON_VALUE", "LARGE_BODY_SLOTS", "SLACK_MIB", "memory_ceiling_mib"]

BODY_COPIES = 3
LARGE_BODY_SLOTS = 1
BYTES_PER_JSON_VALUE = 64
SLACK_MIB = 64


def memory_ceiling_mib(settings: Settings) -> float:
    """MiB a worker may need above its resident size once the models are loaded."""
    bodies = BODY_COPIES * settings.max_buffered_bytes
    parses = LARGE_BODY_SLOTS * BYTES_PER_JSON_VALUE * settings.max_json_values
    return (bodies + parses) / 2**20 + SLACK_MIB
