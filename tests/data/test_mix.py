"""Mixing (tonsai.data.mix): source shares per strategy (weights, temperature, UniMax), the sampling
plan, and the shares the prepare stage realizes from options and mix files."""

import numpy as np
import pytest

from tests.data.corpus import REPO, cfg, en_docs, km_docs, write_lines
from tonsai.data.mix import plan_sources, source_shares, unimax_budgets
from tonsai.data.prepare import run_prepare
from tonsai.data.prepared import load_prepared
from tonsai.errors import StageError


def test_source_shares_strategies():
    srcs = [{"name": "k1", "lang": "km", "weight": None, "chars": 100},
            {"name": "k2", "lang": "km", "weight": None, "chars": 300},
            {"name": "e1", "lang": "en", "weight": None, "chars": 1600}]
    w = source_shares(srcs, {"km": 0.5, "en": 0.5})
    assert w == pytest.approx({"k1": 0.125, "k2": 0.375, "e1": 0.5})
    t = source_shares(srcs, {}, "temperature", alpha=0.5)
    assert t["e1"] == pytest.approx(2 / 3)  # languages: sqrt(400) = 20 against sqrt(1600) = 40
    assert t["k2"] / t["k1"] == pytest.approx(3 ** 0.5)  # inside Khmer: sqrt(300) / sqrt(100)
    assert sum(t.values()) == pytest.approx(1.0)
    assert unimax_budgets({"km": 400, "en": 1600}, 2000, {"km": 2, "en": 2}) == {"km": 800, "en": 1200}
    u = source_shares(srcs, {}, "unimax", budget=2000, max_epochs={"k1": 1, "k2": 1, "e1": 1})
    assert u["k1"] + u["k2"] == pytest.approx(0.2)  # 400 chars at one epoch out of 2000
    with pytest.raises(ValueError, match="give every source of a language a weight"):
        source_shares([dict(srcs[0], weight=1.0), srcs[1]], {"km": 1})


def test_temperature_alpha_one_is_natural_and_zero_uniform():
    srcs = [{"name": "k", "lang": "km", "weight": None, "chars": 100},
            {"name": "e", "lang": "en", "weight": None, "chars": 900}]
    assert source_shares(srcs, {}, "temperature", alpha=1.0) == pytest.approx({"k": 0.1, "e": 0.9})
    assert source_shares(srcs, {}, "temperature", alpha=0.0) == pytest.approx({"k": 0.5, "e": 0.5})


def test_plan_sources_respects_target_and_max_epochs():
    lengths = {"k": np.full(100, 10), "e": np.full(1000, 10)}
    counts, plans, total, reached = plan_sources(lengths, {"k": "km", "e": "en"}, {"k": 0.5, "e": 0.5},
                                                 {"k": 3.0, "e": 1.0}, seed=0, target_chars=4000)
    assert reached and total == 4000
    assert plans["k"].selected_chars == 2000 and plans["k"].epochs == pytest.approx(2.0)
    assert counts["k"].max() == 2
    _, plans, total, reached = plan_sources(lengths, {"k": "km", "e": "en"}, {"k": 0.5, "e": 0.5},
                                            {"k": 3.0, "e": 1.0}, seed=0, target_chars=10**6)
    assert not reached and total == 6000  # 1000 Khmer chars x 3 epochs / 0.5


def test_per_source_weights_target_and_reproducibility(tmp_path):
    k1 = write_lines(tmp_path / "k1.txt", km_docs(60, seed=1))
    k2 = write_lines(tmp_path / "k2.txt", km_docs(60, seed=2))
    en = write_lines(tmp_path / "en.txt", en_docs(200))
    kw = dict(khmer=[k1, k2], english=[en], source_weights=["km:k1.txt=3", "km:k2.txt=1"],
              max_epochs=3.0, target_chars=20000)
    a = run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "a"), **kw))
    run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "b"), **kw))
    ms = a["mixture_sources"]
    assert ms["km:k1.txt"]["requested_share"] == pytest.approx(0.375)
    assert abs(ms["km:k1.txt"]["realized_share"] - 0.375) < 0.02
    assert abs(ms["km:k2.txt"]["realized_share"] - 0.125) < 0.02
    assert ms["km:k1.txt"]["epochs"] > 1  # upsampled, within max_epochs
    assert abs(sum(p["selected_chars"] for p in ms.values()) - 20000) < 200
    assert a["target_reached"] is True
    da, _ = load_prepared(tmp_path / "a")
    db, _ = load_prepared(tmp_path / "b")
    assert da["train"]["id"] == db["train"]["id"]  # same seed, same order
    with pytest.raises(StageError, match=r"match no source"):
        run_prepare(cfg(tmp_path, khmer=[k1], source_weights=["km:nope.txt=1"]))
    # a weight for some sources of a language only: refused before the document step, not after it
    with pytest.raises(StageError, match=r"sources \['km:k2.txt'\] have no weight while others of their language do"):
        run_prepare(cfg(tmp_path, output_dir=str(tmp_path / "c"), khmer=[k1, k2], english=[en],
                        source_weights=["km:k1.txt=3"]))
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.work").exists()


@pytest.mark.parametrize("strategy", ["temperature", "unimax"])
def test_mix_strategies_through_prepare(tmp_path, strategy, caplog):
    from tonsai.data.mix import unimax_budgets

    km = write_lines(tmp_path / "km.txt", km_docs(40))
    en = write_lines(tmp_path / "en.txt", en_docs(400))
    kw = dict(khmer=[km], english=[en], mix_strategy=strategy, temperature_alpha=0.3, validation_fraction=0.05,
              max_epochs=2.0)
    if strategy == "unimax":
        kw["target_chars"] = 30000
    with caplog.at_level("WARNING"):
        m = run_prepare(cfg(tmp_path, **kw))
    avail = {lang: m["mixture"][lang]["available_chars"] for lang in ("km", "en")}
    if strategy == "temperature":
        w = {lang: c ** 0.3 for lang, c in avail.items()}
        want = {lang: v / sum(w.values()) for lang, v in w.items()}
    else:
        budgets = unimax_budgets(avail, 30000, {"km": 2.0, "en": 2.0})
        want = {lang: v / sum(budgets.values()) for lang, v in budgets.items()}
    for lang in ("km", "en"):
        assert m["mixture"][lang]["requested_share"] == pytest.approx(want[lang], abs=1e-6)
        assert abs(m["mixture"][lang]["realized_share"] - want[lang]) < 0.03, m["mixture"]
        assert m["mixture"][lang]["epochs"] <= 2.0 + 1e-9
    # the natural share of Khmer here is far below either strategy's
    assert avail["km"] / sum(avail.values()) < m["mixture"]["km"]["realized_share"]
    assert "ignored" not in caplog.text


def test_temperature_says_it_ignores_source_weights(tmp_path, caplog):
    k1 = write_lines(tmp_path / "k1.txt", km_docs(30, seed=1))
    k2 = write_lines(tmp_path / "k2.txt", km_docs(30, seed=2))
    with caplog.at_level("WARNING"):
        m = run_prepare(cfg(tmp_path, khmer=[k1, k2], mix_strategy="temperature",
                            source_weights=["km:k1.txt=3", "km:k2.txt=1"]))
    assert "weights of km:k1.txt, km:k2.txt" in caplog.text and "ignored" in caplog.text
    assert any("weights of km:k1.txt, km:k2.txt" in w for w in m["warnings"])  # in the manifest too


def test_an_unreachable_target_is_a_warning_in_the_manifest_too(tmp_path):
    km = write_lines(tmp_path / "km.txt", km_docs(20))
    en = write_lines(tmp_path / "en.txt", en_docs(20))
    m = run_prepare(cfg(tmp_path, khmer=[km], english=[en], target_chars=10_000_000))
    assert m["target_reached"] is False
    assert any(w.startswith("--target-chars 10000000 cannot be reached") for w in m["warnings"])


@pytest.mark.slow
def test_shipped_mix_file_gives_the_requested_shares(tmp_path, shared_data, monkeypatch):
    """configs/data/shared_km_en.yaml as the README runs it: all four shared sources, 60/40."""
    monkeypatch.chdir(REPO)  # its paths are relative to the repository root
    m = run_prepare(cfg(tmp_path, mix="configs/data/shared_km_en.yaml", khmer_weight=0.6, english_weight=0.4))
    for lang, want in (("km", 0.6), ("en", 0.4)):
        assert abs(m["mixture"][lang]["realized_share"] - want) < 0.01, m["mixture"]
    for name, p in m["mixture_sources"].items():
        assert abs(p["realized_share"] - p["requested_share"]) < 0.01, (name, p)
        assert p["epochs"] <= p["max_epochs"] + 1e-9
    assert sorted(m["mixture_sources"]) == ["en:shakespeare", "en:wikitext", "km:news", "km:oscar"]


def test_mix_file_shares_on_shared_data(tmp_path, shared_data):
    from tonsai.data.sources import load_mix_file

    shipped = load_mix_file(REPO / "configs" / "data" / "shared_km_en.yaml")
    assert [s.name for s in shipped] == ["km:news", "km:oscar", "en:wikitext", "en:shakespeare"]
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"""sources:
  - {{name: km:ntrex, path: {shared_data}/ntrex128_khm_eng_dev/khm_Khmr.txt, lang: km, weight: 2}}
  - {{name: km:flores, path: {shared_data}/sib200_flores_khm_eng_dev/khm_Khmr.txt, lang: km, weight: 1}}
  - {{name: en:wikitext, path: {shared_data}/english_wikitext2_raw/wikitext2.valid.txt, lang: en, weight: 3}}
  - {{name: en:ntrex, path: {shared_data}/ntrex128_khm_eng_dev/eng_Latn.txt, lang: en, weight: 1, max_epochs: 2}}
""", encoding="utf-8")
    m = run_prepare(cfg(tmp_path, mix=str(mix), khmer_weight=0.6, english_weight=0.4))
    for lang, want in (("km", 0.6), ("en", 0.4)):
        assert abs(m["mixture"][lang]["realized_share"] - want) < 0.01, m["mixture"]
    ms = m["mixture_sources"]
    assert ms["km:ntrex"]["requested_share"] == pytest.approx(0.4)
    for name, p in ms.items():
        assert abs(p["realized_share"] - p["requested_share"]) < 0.01, (name, p)
        assert p["epochs"] <= p["max_epochs"] + 1e-9
    assert {i["source"] for i in m["inputs"]} == set(ms)
    assert all(f["sha256"] for i in m["inputs"] for f in i["files"])
