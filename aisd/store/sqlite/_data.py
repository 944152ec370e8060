"""The data mixins of the stores: change feed, billing inputs, erasure, retention and
analytics."""

from __future__ import annotations

from aisd.store.sqlite._analytics import AnalyticsMethods
from aisd.store.sqlite._billing import BillingMethods
from aisd.store.sqlite._feed import FeedMethods
from aisd.store.sqlite._privacy import PrivacyMethods

__all__ = ["AnalyticsMethods", "BillingMethods", "FeedMethods", "PrivacyMethods"]
