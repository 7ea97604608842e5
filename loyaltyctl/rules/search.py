"""The search keys of ``member find``: how an e-mail and a phone number are stored for
lookup, and what a typed text can match. Pure.

A phone is kept as its digits reversed: ``+1 (555) 010-0199`` and ``5550100199`` share
their last digits, so reversed they share a prefix, and "ends with" becomes a range scan
of one ordinary index on either database (no expression index, no pattern operator
class)."""

from __future__ import annotations

# Digits a typed number needs before it may match the end of a stored one (or a stored
# one the end of it): fewer would find half the members.
MIN_PHONE_DIGITS = 7
PHONE_KEY_DIGITS = 32


def email_key(email: str | None) -> str | None:
    if email is None or not email.strip():
        return None
    return email.strip().lower()


def phone_digits(text: str | None) -> str:
    """The ASCII digits of ``text``, in order."""
    return "".join(ch for ch in text or "" if "0" <= ch <= "9")


def phone_rev(phone: str | None) -> str | None:
    """The stored key: the phone's digits reversed (its last ``PHONE_KEY_DIGITS``)."""
    digits = phone_digits(phone)
    return digits[::-1][:PHONE_KEY_DIGITS] or None


def phone_query(text: str) -> tuple[list[str], list[str]] | None:
    """What a typed number matches: prefixes of stored keys (the stored number ends with
    what was typed, also without a leading trunk 0: ``020 7946 0018`` finds
    ``+44 20 7946 0018``) and exact keys (what was typed ends with the stored number: it
    had a country code the stored one has not). None when the text is not number-like:
    letters in it, or too few digits."""
    digits = phone_digits(text)
    if len(digits) < MIN_PHONE_DIGITS or any(ch.isalpha() for ch in text):
        return None
    rev = digits[::-1][:PHONE_KEY_DIGITS]
    prefixes = [rev]
    national = digits.lstrip("0")
    if national != digits and len(national) >= MIN_PHONE_DIGITS:
        prefixes.append(national[::-1][:PHONE_KEY_DIGITS])
    return prefixes, [rev[:n] for n in range(MIN_PHONE_DIGITS, len(rev) + 1)]


def next_prefix(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix`` (digits)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
