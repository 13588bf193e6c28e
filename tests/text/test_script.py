from tonsai.text import RoutingThresholds, count_scripts, route


def test_counts_by_class():
    c = count_scripts("ខ្ញុំស្រឡាញ់ ABC 12, ok! Ωμέγα")
    assert c.khmer == 12  # 6 base letters, 6 signs
    assert c.latin == 5
    assert c.digit == 2
    assert c.punct == 2
    assert c.other == 5


def test_routing():
    assert route(count_scripts("ប្រទេសកម្ពុជាស្ថិតនៅក្នុងតំបន់អាស៊ីអាគ្នេយ៍។")) == "km"
    assert route(count_scripts("Cambodia is located in Southeast Asia.")) == "en"
    assert route(count_scripts("ប្រទេសកម្ពុជា Cambodia is a country")) == "mixed"
    assert route(count_scripts("Καλημέρα κόσμε")) == "other"
    assert route(count_scripts("12345 !!!")) == "other"


def test_short_khmer_is_not_routed_to_km():
    short = count_scripts("កម្ពុជា")
    assert route(short) != "km"
    assert route(short, RoutingThresholds(khmer_min_chars=1)) == "km"
