"""The data mixins of the SQLite store: the merge, change feed, billing inputs, erasure,
retention, analytics and refused replies."""

from __future__ import annotations

from aisd.store.sqlite._analytics import AnalyticsMethods
from aisd.store.sqlite._billing import BillingMethods
from aisd.store.sqlite._data_merge import MergeMethods
from aisd.store.sqlite._data_refusals import RefusalMethods
from aisd.store.sqlite._feed import FeedMethods
from aisd.store.sqlite._privacy import PrivacyMethods

__all__ = [
    "AnalyticsMethods",
    "BillingMethods",
    "FeedMethods",
    "MergeMethods",
    "PrivacyMethods",
    "RefusalMethods",
]
