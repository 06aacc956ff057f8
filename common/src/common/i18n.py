"""The languages a client may ask for with Accept-Language (messages live with their errors)."""

from typing import Literal

Language = Literal["en", "ru"]
DEFAULT_LANGUAGE: Language = "en"


def pick_language(accept_language: str | None) -> Language:
    """The first supported language in Accept-Language order (q-values respected)."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, tag.strip().lower()[:2]))
    for negative_quality, _, primary in sorted(ranked):
        if negative_quality < 0 and primary in ("en", "ru"):
            return "ru" if primary == "ru" else "en"
    return DEFAULT_LANGUAGE
