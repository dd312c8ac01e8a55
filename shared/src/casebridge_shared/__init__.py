"""Plumbing shared by every Casebridge service.

Kept in one place so a fix to the outbox, the auth check or the error format
lands in all four services at once.
"""
