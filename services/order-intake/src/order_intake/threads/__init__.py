"""The order's thread with the team: messages, the customer's files, read receipts (issue 26)."""
