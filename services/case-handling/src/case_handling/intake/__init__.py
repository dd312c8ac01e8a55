"""What case-handling reads from order-intake: orders and the catalog, as its own reader models."""
