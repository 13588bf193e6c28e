"""Mix files and mixing options are strict, and a mixture that cannot follow the request says so."""

from pathlib import Path

import pytest
import yaml

from tonsai.cli import parse_config
from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.data.prepared import load_splits
from tonsai.data.sources import load_mix_file
from tonsai.errors import StageError

from ..conftest import REPO, SAMPLE

KM, EN = str(SAMPLE / "km.txt"), str(SAMPLE / "en.txt")


@pytest.mark.parametrize("path", sorted((REPO / "configs/data").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_mix_file_loads(path):
    sources = load_mix_file(path)
    declared = yaml.safe_load(path.read_text())["sources"]
    assert [s.name for s in sources] == [d["name"] for d in declared]
    assert [s.weight for s in sources] == [d.get("weight") for d in declared]


@pytest.mark.parametrize("text, message", [
    ("sources:\n  - {path: a.txt, lang: km, wieght: 2}\n", "source #1: unknown key 'wieght' (did you mean weight?)"),
    ("sources:\n  - {path: a.txt, lang: km}\n  - {name: b, path: b.txt, lang: en, max_epoch: 2}\n",
     "source #2 (b): unknown key 'max_epoch' (did you mean max_epochs?)"),
    ("source:\n  - {path: a.txt, lang: km}\n", "unknown top-level key 'source' (did you mean sources?)"),
    ("sources:\n  - {path: a.txt, lang: km}\nweights: {km: 1}\n", "unknown top-level key 'weights'"),
    ("sources:\n  - {path: a.txt}\n", "source #1: missing lang"),
    ("sources:\n  - {name: x, lang: en}\n", "source #1 (x): missing path"),
    ("sources:\n  - {path: a.txt, lang: kh}\n", "source #1: lang 'kh' must be one of ['km', 'en']"),
    ("sources:\n  - {path: a.txt, lang: km, weight: .nan}\n", "weight nan must be >= 0 and finite (source #1)"),
    ("sources:\n  - {path: a.txt, lang: km, weight: .inf}\n", "weight inf must be >= 0 and finite"),
    ("sources:\n  - {path: a.txt, lang: km, weight: -1}\n", "weight -1.0 must be >= 0 and finite"),
    ("sources:\n  - {path: a.txt, lang: km, max_epochs: .nan}\n", "max_epochs nan must be > 0 and finite"),
    ("sources:\n  - {path: a.txt, lang: km, max_epochs: 0}\n", "max_epochs 0.0 must be > 0 and finite"),
    ("sources:\n  - {path: a.txt, lang: km, weight: heavy}\n", "weight: expected a number, got the string 'heavy'"),
    ("sources:\n  - {path: 'hf:x', lang: km, revision: 1234567}\n", "revision: expected a string (quote it"),
    ("sources:\n  - a.txt\n", "source #1: expected a mapping"),
])
def test_bad_mix_file_is_refused_at_load_time(tmp_path, text, message):
    mix = tmp_path / "mix.yaml"
    mix.write_text(text)
    with pytest.raises(StageError) as e:
        load_mix_file(mix)
    assert f"--mix {mix}" in str(e.value) and message in str(e.value)


def test_yaml_1e_minus_3_is_a_number(tmp_path):
    """PyYAML reads 1e-3 (no dot) as a string; a number field takes it as the number it means."""
    mix = tmp_path / "mix.yaml"
    mix.write_text("sources:\n  - {path: a.txt, lang: km, weight: 1e-3}\n")
    assert load_mix_file(mix)[0].weight == 0.001


@pytest.mark.parametrize("flags, message", [
    (["--khmer-weight", "nan"], "--khmer-weight nan: weights must be >= 0 and finite"),
    (["--english-weight", "inf"], "--english-weight inf: weights must be >= 0 and finite"),
    (["--source-weights", "km:km.txt=nan"], "'km:km.txt=nan': weights must be >= 0 and finite"),
    (["--max-epochs", "inf"], "--max-epochs must be a finite number > 0, got inf"),
])
def test_nan_and_inf_mixing_options_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(PrepareConfig, "prepare", ["--khmer", KM, "--english", EN, "--output-dir", "o", *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_source_that_keeps_nothing_is_warned_of_in_the_manifest(tmp_path, caplog):
    """The Khmer sample given as English is routed away; a second copy of the English sample is all
    duplicates. Both sources end with 0 documents: each gets a warning with its top drop reason."""
    m = run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[KM], english=[EN, KM, EN]))
    routed, dup = m["warnings"]
    assert routed.startswith("source en:km.txt") and "kept 0 of its 51 documents" in routed
    assert "top drop reason script_km_in_en_source (51)" in routed and "meant for --khmer" in routed
    assert dup.startswith("source en:en.txt#2") and "top drop reason duplicate (51)" in dup
    assert m["counts"]["en:km.txt"]["kept"] == 0 and m["unmet_shares"] == {}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"two sources are named en:en.txt: the one from {EN} is en:en.txt#2 in the counts" in warned[0]
    assert warned[1:3] == [routed, dup]


def test_a_language_left_empty_is_an_error_or_with_the_flag_a_recorded_warning(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(StageError) as e:
        run_prepare(PrepareConfig(output_dir=str(out), khmer=[KM], english=[KM]))
    assert "no en documents are left after filtering and deduplication (51 documents read; dropped: " \
           "script_km_in_en_source 51): the requested en share cannot be met" in str(e.value)
    assert "--allow-unmet-shares" in str(e.value) and not out.exists()
    m = run_prepare(PrepareConfig(output_dir=str(out), khmer=[KM], english=[KM], allow_unmet_shares=True))
    assert m["unmet_shares"] == {"en": {"requested_share": 0.5, "realized_share": 0.0},
                                 "km": {"requested_share": 0.5, "realized_share": 1.0}}
    assert m["mixture"]["en"]["requested_share"] == 0.5 and m["mixture"]["en"]["selected_chars"] == 0
    assert m["warnings"][-2].startswith("no en documents are left") and m["warnings"][-2].endswith("has no en")
    assert m["warnings"][-1].endswith("km: 50.0% of the training characters requested, 100.0% realized (48 training "
                                      "document(s) of 5,114 characters left: 51 documents read, 3 held out for "
                                      "validation by --validation-fraction and --min-validation-docs); accepted "
                                      "(--allow-unmet-shares)")
    ds = load_splits(out / "dataset")
    assert set(ds["train"]["lang"]) == {"km"} and len(ds["train"]) == m["splits"]["train"] > 0


def test_deduplication_that_would_turn_50_50_into_100_0_is_an_error(tmp_path):
    """Khmer is one real sample sentence 51 times: deduplication leaves 1 document of 34 characters,
    and at one epoch English could add only 34 characters, less than half of any English document,
    so English would get nothing (exit 0 with a 100/0 mixture before). Raising --max-epochs (the
    advice given) meets the request."""
    km = tmp_path / "km.txt"
    km.write_text("រាជធានីរបស់ប្រទេសកម្ពុជាគឺភ្នំពេញ។\n" * 51, encoding="utf-8")
    cfg = dict(output_dir=str(tmp_path / "o"), khmer=[str(km)], english=[EN])
    with pytest.raises(StageError) as e:
        run_prepare(PrepareConfig(**cfg))
    msg = str(e.value)
    assert msg.startswith("the requested language shares cannot be met: en: 50.0% of the training characters "
                          "requested, 0.0% realized (48 training document(s)")
    assert "km: 50.0% of the training characters requested, 100.0% realized (1 training document(s) of 34 " \
           "characters left: 51 documents read; dropped: duplicate 50)" in msg
    assert "--max-epochs" in msg and "--allow-unmet-shares" in msg and not (tmp_path / "o").exists()
    m = run_prepare(PrepareConfig(**cfg, allow_unmet_shares=True))
    assert m["unmet_shares"] == {"en": {"requested_share": 0.5, "realized_share": 0.0},
                                 "km": {"requested_share": 0.5, "realized_share": 1.0}}
    assert m["warnings"][-1].endswith("accepted (--allow-unmet-shares)")
    m = run_prepare(PrepareConfig(**{**cfg, "output_dir": str(tmp_path / "o2")}, max_epochs=30))
    assert m["unmet_shares"] == {} and m["warnings"] == []
    assert abs(m["mixture"]["km"]["realized_share"] - 0.5) < 0.02


def test_a_share_that_whole_documents_cannot_follow_is_a_recorded_warning(tmp_path):
    """One longer Khmer sentence left after deduplication: English can only come in whole
    documents, so 50/50 becomes about 62/38. Not an error (every language gets its part), but said."""
    line = "សួស្ដី! តើអ្នកសុខសប្បាយទេ? ខ្ញុំសុខសប្បាយជាទេ អរគុណ។ តើអ្នកឈ្មោះអ្វី? ខ្ញុំឈ្មោះសុភា។"
    assert line in SAMPLE.joinpath("km.txt").read_text(encoding="utf-8")
    km = tmp_path / "km.txt"
    km.write_text((line + "\n") * 51, encoding="utf-8")
    m = run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[str(km)], english=[EN]))
    assert set(m["unmet_shares"]) == {"km", "en"} and m["unmet_shares"]["km"]["realized_share"] < 0.45
    (w,) = m["warnings"]
    assert w.startswith("the requested language shares cannot be met") and "raise its max_epochs" in w


def test_a_language_starved_by_a_short_one_names_the_short_one(tmp_path):
    """English keeps one short document (the rest of its file is Khmer): the mixture, sized by English,
    has room for no whole Khmer document. The error says English is the short language."""
    en = tmp_path / "en.txt"
    en.write_text(Path(KM).read_text(encoding="utf-8") + "A single English sentence, long enough to keep.\n",
                  encoding="utf-8")
    with pytest.raises(StageError) as e:
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[KM], english=[str(en)]))
    msg = str(e.value)
    assert "The mixture is sized by en, the short language: 47 characters left for its share, so km rounds to " \
           "no whole document" in msg and "add data to the short language (en)" in msg
    assert "script_km_in_en_source 51" in msg


def test_a_missing_path_of_a_mix_file_names_the_mix_file_and_where_relative_paths_start(tmp_path, monkeypatch):
    mix = tmp_path / "mixes" / "mine.yaml"
    mix.parent.mkdir()
    mix.write_text("sources:\n  - {path: data/km.txt, lang: km}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError) as e:
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), mix=str(mix)))
    assert (f"km source data/km.txt: no such file or folder (from --mix {mix}; its relative paths are relative to "
            f"the folder the command runs in, here {tmp_path}, not to the mix file)") in str(e.value)


def test_a_target_smaller_than_a_document_says_to_raise_it(tmp_path):
    with pytest.raises(StageError) as e:
        run_prepare(PrepareConfig(output_dir=str(tmp_path / "o"), khmer=[KM], english=[EN], target_chars=100))
    msg = str(e.value)
    assert msg.endswith("--target-chars 100 is smaller than a whole document of each language's share: raise it "
                        "(sources contribute whole documents)")
    assert "--allow-unmet-shares" not in msg and "add data" not in msg
