"""Billing: top-ups through Stripe, the card on file, auto-topup, invoices and the webhook."""
