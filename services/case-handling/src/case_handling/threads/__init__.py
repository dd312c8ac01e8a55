"""The order's thread on the staff side: messages, the customer's files, read receipts (issue 26)."""
