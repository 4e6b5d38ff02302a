"""Webhooks: partner endpoints, and the relay that delivers the event outbox to them (signed, retried,
at least once). A nested app with its own label and migrations so it evolves apart from `accounts`."""
