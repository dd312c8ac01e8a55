"""order-intake: catalog, customer accounts, orders and the token issuer (SPEC A1-A3, A8)."""

__version__ = "0.1.0"
