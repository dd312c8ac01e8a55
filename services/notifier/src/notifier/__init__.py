"""notifier: alerts staff the moment a case needs them, on the channels they use (SPEC A5, C4).

So far the service has its settings, database, migrations and the operational
endpoints (``/healthz``, ``/readyz``, ``/metrics``); its features and its
worker process arrive with their own issues.
"""

__version__ = "0.1.0"
