"""Moved: alias-change notifications live next to the registry, in :mod:`storage.alias_events`.

This module re-exports them for the importers not yet switched over; import
from ``storage.alias_events`` in new code.
"""

from storage.alias_events import (
    NOTIFY_FAILURES,
    AliasChangePublisher,
    AliasChangeSubscriber,
    encode_change,
    watch_alias_changes,
)

__all__ = [
    "NOTIFY_FAILURES",
    "AliasChangePublisher",
    "AliasChangeSubscriber",
    "encode_change",
    "watch_alias_changes",
]
