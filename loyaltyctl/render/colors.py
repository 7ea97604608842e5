"""Colour contrast (WCAG 2): brand colours come from program files, so the text laid on
them is chosen, not assumed."""

from __future__ import annotations

DARK = "#000000"
LIGHT = "#ffffff"


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(color: str) -> float:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable_text_on(background: str) -> str:
    """Dark or light text, whichever contrasts more (one of them always reaches 4.5:1)."""
    return DARK if contrast(DARK, background) >= contrast(LIGHT, background) else LIGHT
