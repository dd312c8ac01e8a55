"""customer-ledger: per-department customer records in a tamper-evident Merkle journal (SPEC B1-B8).

So far the service has its settings, database, migrations and the operational
endpoints (``/healthz``, ``/readyz``, ``/metrics``); its features and its
worker process arrive with their own issues.
"""

__version__ = "0.1.0"
