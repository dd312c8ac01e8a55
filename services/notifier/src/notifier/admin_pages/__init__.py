"""The notifier's administration pages at ``/admin/``: webhooks, routing rules, teams, deliveries."""
