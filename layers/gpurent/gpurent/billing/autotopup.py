"""Auto-topup: charge the saved card when available drops below the user's threshold.

`gpurent.wallet` calls `after_debit` after every debit of available that left
it below the threshold kept on the wallet item (so the check costs no read).
"""

from __future__ import annotations


def after_debit(user_id: str, available: int) -> None:
    """The auto-topup check after a debit (the Stripe billing issue fills it in)."""
    return None
