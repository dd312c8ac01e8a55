"""Fixtures shared by every test suite (services' and the cross-service ``tests/``)."""

pytest_plugins = ["casebridge_shared.testing.fixtures"]
