"""The project's toxicity lexicon: loading, validation, and matching on normalized text."""

import json

import pytest

from tonsai.errors import StageError
from tonsai.safety import CATEGORIES
from tonsai.safety.lexicon import load_lexicon
from tonsai.safety.prompts import load_prompts
from tonsai.text import normalize

from ..conftest import REPO

SHIPPED = REPO / "eval_suites" / "safety"


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon([SHIPPED])


def terms(lexicon, text):
    return [h.term for h in lexicon.hits(text)]


def test_shipped_lexicons_cover_every_category_in_both_languages(lexicon):
    assert {f["lang"] for f in lexicon.files} == {"km", "en"}
    for path in ("lexicon_km.yaml", "lexicon_en.yaml"):
        one = load_lexicon([SHIPPED / path])
        assert set(one.terms.values()) == set(CATEGORIES), path
    khmer = [t for t in load_lexicon([SHIPPED / "lexicon_km.yaml"]).terms]
    assert all(any("\u1780" <= c <= "\u17ff" for c in t) for t in khmer)


def test_khmer_spelling_variants_that_normalize_alike_match(lexicon):
    canonical = "គាត់ចង់សម្លាប់ខ្លួន"
    assert terms(lexicon, canonical) == ["សម្លាប់ខ្លួន"]
    # the vowel AA typed before the subscript LO: another byte sequence, the same word once normalized
    reordered = "គាត់ចង់សម\u17b6\u17d2លប់ខ្លួន"
    assert reordered != canonical and normalize(reordered) == canonical
    assert terms(lexicon, reordered) == ["សម្លាប់ខ្លួន"]
    # zero-width spaces between the words, as some sites insert
    assert terms(lexicon, "គាត់\u200bចង់\u200bសម្លាប់\u200bខ្លួន") == ["សម្លាប់ខ្លួន"]
    # the file writes subscript DA (បណ្ដេញ); text with subscript TA (បណ្តេញ) renders alike and matches
    assert "\u17d2\u178a" in (SHIPPED / "lexicon_km.yaml").read_text(encoding="utf-8")
    assert terms(lexicon, "ត្រូវតែបណ្តេញពួកវាចេញ") == ["បណ្តេញពួកវាចេញ"]
    assert lexicon.hits("បណ្តេញពួកវាចេញ")[0].category == "hate"


def test_khmer_matches_only_on_syllable_boundaries(tmp_path):
    path = tmp_path / "lexicon_km.yaml"
    path.write_text("lang: km\ncategories:\n  violence: [កាប់ក, លាប់]\n", encoding="utf-8")
    lx = load_lexicon([path])
    assert terms(lx, "គេកាប់កគាត់") == ["កាប់ក"]  # no spaces needed between Khmer words
    assert terms(lx, "គេកាប់កាត់ឈើ") == []  # ក continues into កា: another syllable
    assert terms(lx, "គាត់ស្លាប់ហើយ") == []  # ល is a subscript of ស there
    assert terms(lx, "លាប់") == ["លាប់"]


def test_english_matches_whole_words_case_insensitively(lexicon):
    assert terms(lexicon, "You are an IDIOT. Shut\n  up!") == ["idiot", "shut up"]
    assert terms(lexicon, "The method of something") == []  # meth inside words
    assert terms(lexicon, "idiots") == []  # whole words: plurals are listed terms or not matched
    assert terms(lexicon, "a pipe bomb") == ["pipe bomb"]
    hits = lexicon.hits("I will kill you and then kill myself")
    assert [(h.term, h.category) for h in hits] == [("kill you", "violence"), ("kill myself", "self_harm")]


def test_shipped_prompts_cover_categories_and_do_not_contain_terms(lexicon):
    prompts = load_prompts(SHIPPED / "prompts.jsonl")
    for lang in ("km", "en"):
        for cat in CATEGORIES:
            assert sum(p.lang == lang and p.category == cat for p in prompts) == 8, (lang, cat)
    # a flag must come from what the model adds, not from a prompt it repeats
    assert [p.id for p in prompts if lexicon.hits(p.prompt)] == []


@pytest.mark.parametrize("body, where", [
    ("lang: km\ncategories:\n  insults: [អាឆ្កែ]\n", "unknown category 'insults'"),
    ("lang: km\ncategories:\n  hate: [អាយួន, '  ']\n", "categories.hate[1]"),
    ("lang: en\ncategories:\n  hate: [subhuman, null]\n", "categories.hate[1]"),
    ("lang: en\ncategories:\n  hate: [vermin]\n  violence: [vermin]\n",
     "categories.violence[0]: 'vermin' is listed under 'hate'"),
    ("lang: en\ncategories:\n  hate: vermin\n", "categories.hate must be a list"),
    ("categories:\n  hate: [vermin]\n", "'lang' must name the language"),
    ("lang: en\ncategories: [vermin\n", "not valid YAML"),
    ("- vermin\n", "expected a mapping"),
    ("lang: en\nterms: {}\ncategories: {}\n", "unknown key(s) ['terms']"),
])
def test_bad_lexicon_files_name_the_file_and_entry(tmp_path, body, where):
    path = tmp_path / "lexicon_bad.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(StageError) as e:
        load_lexicon([path])
    assert str(path) in str(e.value) and where in str(e.value)


def test_lexicon_paths_must_exist(tmp_path):
    with pytest.raises(StageError, match="no such file"):
        load_lexicon([tmp_path / "missing.yaml"])
    with pytest.raises(StageError, match="no lexicon_"):
        load_lexicon([tmp_path])


@pytest.mark.parametrize("line, message", [
    ({"id": "a", "lang": "km", "category": "insult", "prompt": "x"}, "unknown category 'insult'"),
    ({"id": "a", "lang": "km", "category": "hate", "prompt": ""}, "field 'prompt'"),
    ({"id": "a", "lang": "km", "category": "hate"}, "field 'prompt'"),
])
def test_bad_prompt_files_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    good = {"id": "z", "lang": "en", "category": "hate", "prompt": "Say something."}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(StageError, match=f"{path}:2: .*{message}"):
        load_prompts(path)
