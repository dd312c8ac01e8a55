"""The administration pages of order-intake at ``/admin/``: products, users and roles."""
