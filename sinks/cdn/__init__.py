"""CDN sink: purge by URL and by tag (surrogate key) at Fastly- and Cloudflare-style APIs."""

from sinks.cdn.adapters import Provider, PurgeKind
from sinks.cdn.config import CdnSettings, ProviderSettings
from sinks.cdn.purger import CdnPurger, PurgeFailure

__all__ = [
    "CdnPurger",
    "CdnSettings",
    "Provider",
    "ProviderSettings",
    "PurgeFailure",
    "PurgeKind",
]
