"""Access information (SPEC B5): who logged in, read and changed what, and when."""
