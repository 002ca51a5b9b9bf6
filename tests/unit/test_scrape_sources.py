"""shazzam.scrape.sources: the shape of a sources file."""

from __future__ import annotations

import pytest

from shazzam.scrape import load_sources


@pytest.mark.parametrize(
    "text, words",
    [
        ('[[sources]]\nbase_url = "https://shop.example/"\n', r"unknown top-level key sources.*\[\[source\]\]"),
        ('[source]\nbase_url = "https://shop.example/"\n', r"source must be an array of tables.*\[\[source\]\]"),
        ("source = 5\n", r"source must be an array of tables.*\[\[source\]\]"),
        ('source = ["https://shop.example/"]\n', r"source must be an array of tables"),
        ('shops = 1\n[[source]]\nbase_url = "https://shop.example/"\n', r"unknown top-level key shops"),
    ],
)
def test_a_file_not_made_of_source_tables_is_refused_naming_the_file(tmp_path, text, words):
    path = tmp_path / "sources.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=words) as refused:
        load_sources(path)
    assert str(refused.value).startswith(f"{path}: ")


def test_a_file_without_sources_has_none(tmp_path):
    path = tmp_path / "sources.toml"
    path.write_text("# no shops yet\n")
    assert load_sources(path) == []
