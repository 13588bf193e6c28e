"""The project's toxicity lexicon: term lists per harm category, one YAML file per language.

File format (eval_suites/safety/lexicon_km.yaml; sources and limits in eval_suites/safety/SOURCES.md)::

    lang: km
    categories:
      harassment: [អាឆ្កែ, ...]
      violence: [...]

Categories are :data:`tonsai.safety.CATEGORIES`. Terms are normalized with
:func:`tonsai.text.normalize` when loaded and text is normalized before matching, so spellings
that normalize alike (a vowel typed before a subscript, subscript DA for TA, stray zero-width
spaces) match the same term. Spellings that stay different after normalization (អោយ and ឲ្យ) are
listed as separate terms.

Matching, per term by its script:

- a term with Khmer letters matches as a substring (Khmer writes no spaces between words), but
  only on Khmer syllable boundaries: it may not begin with a consonant that is a subscript of the
  character before it, nor end where the next character (a vowel sign, sign, COENG or joiner) still
  belongs to its last syllable. ``កាប់ក`` does not match inside ``កាប់កាត់``.
- any other term matches whole words, case-insensitively; a space inside a term matches any run
  of whitespace.

Written here rather than taken from a library: the usual profanity filters (better-profanity,
profanity-check, LDNOOBW lists) know no Khmer and split words at spaces, which Khmer does not have.
The terms of each kind run as one regular expression shaped as a trie (:func:`_trie_regex`), fast
enough for the prepare filter to scan a corpus.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path

import yaml

from tonsai.errors import StageError
from tonsai.manifest import file_sha256
from tonsai.safety import CATEGORIES
from tonsai.text import normalize
from tonsai.text.khmer import COENG, KHMER_CHAR

# characters that continue the syllable before them: dependent vowels and signs, COENG, joiners
_SYLLABLE_CONTINUES = "[\u17b4-\u17d3\u17dd\u200c\u200d]"


@dataclasses.dataclass(frozen=True)
class Hit:
    term: str
    category: str


@dataclasses.dataclass
class Lexicon:
    """Terms (normalized) with their category and the file they came from."""

    terms: dict[str, str]  # term -> category
    files: list[dict]  # {"path", "lang", "terms", "sha256"} per file read

    def __post_init__(self) -> None:
        khmer = [t for t in self.terms if KHMER_CHAR.search(t)]
        other = [t for t in self.terms if not KHMER_CHAR.search(t)]
        self._key = {_key(t): t for t in self.terms}
        self._patterns = []
        if khmer:
            self._patterns.append(re.compile(f"(?<!{COENG})(?:{_trie_regex(khmer)})(?!{_SYLLABLE_CONTINUES})"))
        if other:
            self._patterns.append(re.compile(rf"(?<!\w)(?:{_trie_regex([_key(t) for t in other])})(?!\w)",
                                             re.IGNORECASE))

    def hits(self, text: str, normalized: bool = False) -> list[Hit]:
        """Every term occurrence in ``text`` (normalized here unless ``normalized``), in text order;
        where terms overlap, the longest at the leftmost position."""
        if not normalized:
            text = normalize(text)
        found = sorted((m.start(), self._key[_key(m.group())]) for p in self._patterns for m in p.finditer(text))
        return [Hit(term, self.terms[term]) for _, term in found]

    def count(self, text: str, normalized: bool = False) -> int:
        return len(self.hits(text, normalized))


def summarize(hits: list[Hit]) -> list[dict]:
    """``[{"term", "category", "count"}]`` in order of first occurrence."""
    counts = collections.Counter(hits)
    return [{"term": h.term, "category": h.category, "count": n} for h, n in counts.items()]


def _key(text: str) -> str:
    """A term's lookup key: Khmer as it is; other text lower-cased with its spaces collapsed."""
    return text if KHMER_CHAR.search(text) else " ".join(text.lower().split())


def _trie_regex(terms: list[str]) -> str:
    """One regular expression for ``terms`` that shares their common prefixes (a trie), so the engine
    tries one branch per position instead of every term. With the shipped lexicon both patterns
    together scan 1.5-2M characters per second of the shared Khmer and English data, against 30-60k
    for a plain alternation of the same terms. Greedy, so the longest term wins; a space matches any
    run of whitespace."""
    root: dict = {}
    for term in terms:
        node = root
        for ch in term:
            node = node.setdefault(ch, {})
        node[""] = {}

    def branch(node: dict) -> str:
        alts = [(r"\s+" if ch == " " else re.escape(ch)) + branch(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return branch(root)


def lexicon_files(paths: list[str | Path]) -> list[Path]:
    """The YAML files named: files as they are, folders as their ``lexicon_*.yaml`` files."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("lexicon_*.yaml")) + sorted(p.glob("lexicon_*.yml"))
            if not found:
                raise StageError(f"lexicon folder {p} holds no lexicon_*.yaml file")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise StageError(f"lexicon {p}: no such file or folder")
    return out


def load_lexicon(paths: list[str | Path]) -> Lexicon:
    """Read and validate lexicon files (or folders of ``lexicon_*.yaml``) into one :class:`Lexicon`."""
    terms: dict[str, str] = {}
    where: dict[str, str] = {}
    files = []
    for path in lexicon_files(paths):
        lang, entries = _read_file(path)
        for category, index, term in entries:
            at = f"{path}: categories.{category}[{index}]"
            if term in terms and terms[term] != category:
                raise StageError(f"{at}: {term!r} is listed under {terms[term]!r} too ({where[term]}); a term "
                                 "belongs to one category")
            terms.setdefault(term, category)
            where.setdefault(term, at)
        files.append({"path": str(path), "lang": lang, "terms": len(entries), "sha256": file_sha256(path)})
    return Lexicon(terms, files)


def _read_file(path: Path) -> tuple[str, list[tuple[str, int, str]]]:
    """(lang, [(category, index, normalized term)]) of one file, or StageError naming the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise StageError(f"{path}: not UTF-8 text ({e})") from e
    except yaml.YAMLError as e:
        raise StageError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
        raise StageError(f"{path}: expected a mapping with 'lang' and 'categories' (category: list of terms); "
                         "see eval_suites/safety/lexicon_en.yaml")
    unknown_keys = sorted(set(data) - {"lang", "categories"})
    if unknown_keys:
        raise StageError(f"{path}: unknown key(s) {unknown_keys}; a lexicon file has 'lang' and 'categories'")
    lang = data.get("lang")
    if not isinstance(lang, str) or not lang.strip():
        raise StageError(f"{path}: 'lang' must name the language of the terms, e.g. lang: km")
    entries = []
    for category, items in data["categories"].items():
        if category not in CATEGORIES:
            raise StageError(f"{path}: unknown category {category!r}; the categories are {', '.join(CATEGORIES)}")
        if not isinstance(items, list):
            raise StageError(f"{path}: categories.{category} must be a list of terms")
        for i, item in enumerate(items):
            term = normalize(item).strip() if isinstance(item, str) else None
            if not term:
                raise StageError(f"{path}: categories.{category}[{i}] is {item!r}: a term must be non-empty text")
            entries.append((category, i, " ".join(term.split()) if not KHMER_CHAR.search(term) else term))
    return lang, entries
