"""training/choose_views.py: the serving views compared on CCP garment crops (no torch needed)."""

from __future__ import annotations

import json
import sys

import pytest

from shazzam.taxonomy import CATEGORIES
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "training"))
import choose_views  # noqa: E402


def test_compares_view_sets_on_ccp_crops(shared_data, tiny_clothing, capsys):
    assert choose_views.main(["--ccp", str(shared_data / "ccp"), "--data", str(tiny_clothing), "--photos", "1-6",
                              "--candidates", "centre,whole,centre+whole", "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "refused 1 unreadable gallery image(s)" in out.err
    assert report["crops"] == sum(report["crops_per_category"].values()) >= 6
    assert set(report["crops_per_category"]) == set(CATEGORIES)
    rows = {"+".join(row["views"]): row for row in report["candidates"]}
    assert list(rows) == ["centre", "whole", "centre+whole"]
    for row in rows.values():
        assert 0 <= row["precision_at_10"] <= 1 and 0 <= row["map_at_10"] <= 1 and 0 <= row["accuracy"] <= 1
    # the views are different inputs: on a few crops some figure tells them apart
    assert rows["centre"] != rows["whole"] or rows["centre"] != rows["centre+whole"]


def test_refuses_an_unknown_view(capsys):
    with pytest.raises(SystemExit):
        choose_views.main(["--candidates", "centre+sideways"])
    assert "unknown views ['sideways']" in capsys.readouterr().err


def test_refuses_the_held_out_ccp_photos(capsys):
    with pytest.raises(SystemExit):
        choose_views.main(["--photos", "701-800"])
    assert "not within the training photos 1-700 (0701-0800 are held out)" in capsys.readouterr().err
