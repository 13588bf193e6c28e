"""tonsai.manifest helpers that the stages share."""

from tonsai.manifest import accounting_line


def test_the_accounting_line_names_every_drop_reason_largest_first():
    counts = {"read": 10_000, "kept": 6_000, "dropped:too_short": 1_000, "dropped:duplicate": 2_500,
              "dropped:near_duplicate": 500, "dropped:empty": 0, "validation": 300, "invalid_utf8_lines": 4}
    assert accounting_line("km:news.txt", counts) == (
        "km:news.txt: read 10,000, kept 6,000, dropped 4,000 (duplicate 2,500, too_short 1,000, near_duplicate 500)")
    assert accounting_line("en:a.txt", {"read": 3, "kept": 3}) == "en:a.txt: read 3, kept 3, dropped 0"
