"""The data-out mixins of the SQLite store: change feed, billing inputs, erasure, retention."""

from __future__ import annotations

from aisd.store.sqlite._billing import BillingMethods
from aisd.store.sqlite._feed import FeedMethods
from aisd.store.sqlite._privacy import PrivacyMethods

__all__ = ["BillingMethods", "FeedMethods", "PrivacyMethods"]
