"""Currencies by their minor unit, as prices are read (shazzam.scrape.extract), kept (the catalogue)
and shown (the API)."""

from __future__ import annotations

from decimal import Decimal

# Currencies whose minor unit is a thousandth: "12.505 KWD" is twelve dinars and a half.
THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "JOD", "KWD", "LYD", "OMR", "TND"})
# Currencies priced in whole units (ISO gives some of them cents no one uses): "299.000" is 299,000.
WHOLE_UNIT_CURRENCIES = frozenset({"CLP", "COP", "HUF", "IDR", "IQD", "ISK", "JPY", "KRW", "PYG", "UGX", "VND", "XAF", "XOF"})


def price_places(currency: str | None) -> int:
    """The decimals a price in this currency is kept and shown with: three for a currency of
    thousandths, else two (a yen price is shown as "1200.00", as it always was)."""
    return 3 if currency in THREE_DECIMAL_CURRENCIES else 2


def price_text(price, currency: str | None) -> str | None:
    """A price as the API shows it: a decimal string to the currency's minor unit ("12.50", "12.505")."""
    return None if price is None else f"{Decimal(price):.{price_places(currency)}f}"
