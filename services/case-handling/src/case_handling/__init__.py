"""case-handling: the independent platform where staff turn orders into cases and work them (SPEC A4-A9).

So far the service has its settings, database, migrations and the operational
endpoints (``/healthz``, ``/readyz``, ``/metrics``); its features and its
worker process arrive with their own issues.
"""

__version__ = "0.1.0"
