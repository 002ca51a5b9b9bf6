"""Prices to each currency's minor unit, as the catalogue keeps them and the API shows them."""

from decimal import Decimal

import pytest

from shazzam.money import THREE_DECIMAL_CURRENCIES, WHOLE_UNIT_CURRENCIES, price_places, price_text


@pytest.mark.parametrize("price, currency, shown", [
    (Decimal("12.505"), "KWD", "12.505"),
    (Decimal("12.5"), "OMR", "12.500"),
    (Decimal("12.5"), "EUR", "12.50"),
    (Decimal("1200"), "JPY", "1200.00"),  # whole units, shown to the cent as always
    (Decimal("12.5"), None, "12.50"),
    (None, "KWD", None),
])
def test_a_price_is_shown_to_its_currencys_minor_unit(price, currency, shown):
    assert price_text(price, currency) == shown


def test_no_currency_is_both_whole_and_of_thousandths():
    assert not THREE_DECIMAL_CURRENCIES & WHOLE_UNIT_CURRENCIES
    assert price_places("IQD") == 2 and price_places("BHD") == 3
