"""The web page for a shopper on a keyboard or with a screen reader, or who sees poorly: text and
form fields that stand out from their background, results a screen reader hears as a list, the
focus kept when what held it is replaced, and a list browsed with the arrow keys searched once."""

from __future__ import annotations

from tests.browser.test_page import search_photo

# WCAG's contrast ratio of two computed colours, and the background under an element's own (the
# nearest opaque one, with the translucent ones above it laid over).
COLOURS = """
  const rgba = (colour) => colour.match(/[\\d.]+/g).map(Number).concat(1).slice(0, 4);
  const luminance = ([r, g, b]) => {
    const linear = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  };
  const ratio = (one, other) => {
    const [a, b] = [luminance(one), luminance(other)];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  };
  const background = (style, element) => {
    const layers = [rgba(style.backgroundColor)];
    for (let e = element; e && layers.at(-1)[3] < 1; e = e.parentElement) layers.push(rgba(getComputedStyle(e).backgroundColor));
    const over = (under, [r, g, b, a]) => [r * a + under[0] * (1 - a), g * a + under[1] * (1 - a), b * a + under[2] * (1 - a)];
    return layers.reverse().reduce(over, [255, 255, 255]);
  };
"""

# Every visible text's contrast against the background under it, and whether the text is large
# (24 px, or 18.66 px bold: 3:1 is enough there). The outlines' labels are ::after content.
CONTRASTS = "() => {" + COLOURS + """
  const measure = (what, style, under) => {
    const size = parseFloat(style.fontSize);
    return { what, colour: style.color, ratio: ratio(rgba(style.color), background(style, under)),
             large: size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700) };
  };
  const found = [];
  const texts = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (texts.nextNode()) {
    const element = texts.currentNode.parentElement;
    if (!texts.currentNode.textContent.trim() || !element.checkVisibility() || element.closest(".visually-hidden, :disabled")) continue;
    found.push(measure(texts.currentNode.textContent.trim().slice(0, 40), getComputedStyle(element), element.parentElement));
  }
  for (const box of document.querySelectorAll(".box")) found.push(measure(box.dataset.label, getComputedStyle(box, "::after"), box));
  return found;
}"""


# Each filter field's border against the field inside it and the page around it: a text field is
# seen only by its border (WCAG AA's non-text contrast, 3:1).
FIELD_EDGES = "() => {" + COLOURS + """
  return [...document.querySelectorAll("#filters input, #filters select")].map((field) => {
    const [style, label] = [getComputedStyle(field), field.parentElement];
    const edge = rgba(style.borderTopColor);
    const [inside, around] = [background(style, label), background(getComputedStyle(label), label.parentElement)];
    return [field.id, style.borderTopColor, Math.min(ratio(edge, inside), ratio(edge, around))];
  });
}"""


def test_every_text_is_readable_against_its_background(page, site):
    # White on the accent (the buttons, the chosen outline's label) and the accent's prices on white were 4.3:1.
    search_photo(page, site)
    contrasts = page.evaluate(CONTRASTS)
    assert any(c["what"] == "Apply" for c in contrasts) and any(c["what"].startswith("1 ") for c in contrasts)
    faint = [(c["what"], c["colour"], round(c["ratio"], 2)) for c in contrasts if c["ratio"] < (3 if c["large"] else 4.5)]  # WCAG AA
    assert faint == [], faint


def test_a_screen_reader_hears_the_results_as_a_list(page, site):
    # The list was itself the tab panel: its role replaced the list's, and no "list, 8 items" was heard.
    search_photo(page, site)
    panel = page.get_by_role("tabpanel", name="Similar items")
    assert panel.get_by_role("list").get_by_role("listitem").count() == page.locator("#items .item").count() > 0


def test_a_screen_reader_finds_the_results_by_heading_and_from_each_tab(page, site):
    # The page had no heading but its title, so a screen reader's heading keys could not reach the
    # results, and the tabs named no panel, so "controls" could not take the shopper there.
    search_photo(page, site)
    heading = page.get_by_role("heading", level=2, name="What we found")
    assert heading.count() == 1 and page.get_by_role("region", name="What we found").count() == 1
    tabs = page.locator("#garments [role=tab]")
    assert tabs.count() == 3
    for tab in tabs.all():
        assert page.locator(f"#{tab.get_attribute('aria-controls')}").get_attribute("role") == "tabpanel"


def focused(page) -> str:
    active = "document.activeElement"
    return page.evaluate(f"{active} === document.body ? '(the page)' : {active}.id || {active}.textContent")


def test_the_focus_is_not_lost_when_the_results_holding_it_are_replaced(page, site):
    # A shopper tabbed into the results while a search ran: its answer replaced them and dropped the
    # focus to the page's start, and so did a failed search clearing them.
    search_photo(page, site)
    page.locator("#garments [role=tab]").nth(1).click()
    page.locator("#items .item a").nth(2).focus()
    with page.expect_response("**/search"):
        page.evaluate("document.getElementById('filters').requestSubmit()")
    page.wait_for_selector("body:not(.busy) #items .item")
    assert focused(page).startswith("2.")  # the chosen garment's tab, just before its new results
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('#items') !== null")
    page.route("**/search", lambda route: route.fulfill(status=503, json={"message": "Service Unavailable"}))
    page.evaluate("document.getElementById('filters').requestSubmit()")
    page.locator("#error").wait_for(state="visible")
    page.wait_for_selector("body:not(.busy)")
    assert focused(page) == "apply"  # the way to try again


def test_every_filter_field_can_be_told_from_the_page(page, site):
    # The price fields' only edge was a 1.2:1 border, white on a near-white page.
    page.goto(site)
    edges = page.evaluate(FIELD_EDGES)
    assert len(edges) == 4 and [edge for edge in edges if edge[2] < 3] == []


def test_no_empty_tab_list_is_left_when_a_search_fails(page, site):
    # A screen reader heard "Garments found, tab list" with no tab in it, and an empty panel of no tab.
    search_photo(page, site)
    page.route("**/search", lambda route: route.fulfill(status=503, json={"message": "Service Unavailable"}))
    page.click("#apply")
    page.locator("#error").wait_for(state="visible")
    page.wait_for_selector("body:not(.busy)")
    assert page.get_by_role("tablist").count() == 0 and page.get_by_role("tabpanel").count() == 0
    page.unroute("**/search")
    page.click("#apply")
    page.wait_for_selector("#items .item")
    assert page.get_by_role("tablist", name="Garments found").get_by_role("tab").count() == 3
    assert page.get_by_role("tabpanel", name="Similar items").is_visible()


def test_an_outline_clicked_without_moving_the_focus_hands_it_to_the_chosen_tab(page, site):
    # Safari and some screen readers click without focusing: a result link held the focus, the
    # garment switch replaced the results, and the focus fell to the page's start.
    search_photo(page, site)
    page.locator("#items .item a").nth(1).focus()
    page.evaluate("document.querySelectorAll('#boxes .box')[2].click()")
    assert page.locator("#garments [role=tab]").nth(2).get_attribute("aria-selected") == "true"
    assert focused(page).startswith("3.")  # the chosen garment's tab, just before its new results
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('#items') !== null")


def test_browsing_a_list_with_the_arrow_keys_searches_once_the_keys_rest(page, site):
    # Chromium changes a closed list at each arrow key: every option passed started a search, which
    # aborted the one before, and a screen reader heard "Looking for garments…" at each.
    search_photo(page, site)
    searches = []
    page.on("request", lambda request: request.url.endswith("/search") and searches.append(request))
    page.focus("#category")
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    browsed_to = page.input_value("#category")
    assert browsed_to and searches == [] and page.locator("body.busy").count() == 0
    page.wait_for_timeout(1500)
    assert len(searches) == 1
    page.wait_for_selector("body:not(.busy) #items .item")
    assert page.locator("#garments [role=tab]").first.inner_text() == f"1. {browsed_to} (as you chose)"  # the search was for it
    # An option picked from the opened list (a pointer, a finger: a change with no key down, as
    # select_option makes it) is searched at once, in the change's own handling.
    picked = """() => { const list = document.getElementById('category'); list.value = 'dress';
      list.dispatchEvent(new Event('change', { bubbles: true })); return document.body.classList.contains('busy'); }"""
    assert page.evaluate(picked)
    page.wait_for_selector("body:not(.busy) #items .item")
    assert len(searches) == 2
    # Tab's keydown lands on the list and its keyup on the next field: a pick after it is still at once.
    page.focus("#category")
    page.keyboard.press("Tab")
    assert page.evaluate(picked.replace("'dress'", f"'{browsed_to}'"))
    page.wait_for_selector("body:not(.busy) #items .item")
    assert len(searches) == 3 and page.console_errors == []
