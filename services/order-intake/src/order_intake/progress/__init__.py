"""The customer's view of the work on their order, fed by case-handling's events."""
