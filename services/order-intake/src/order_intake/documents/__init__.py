"""Solution documents: copies of case-handling's customer-visible files, kept for the customer."""
