"""Small generated Khmer and English corpora and a PrepareConfig with test defaults, shared by the
prepare-stage tests (sources, filters, dedup, mix, prepare, executors)."""

from pathlib import Path

import numpy as np

from tonsai.data.prepare import PrepareConfig

REPO = Path(__file__).resolve().parents[2]
KM_WORDS = ["ប្រទេស", "កម្ពុជា", "ទន្លេ", "មេគង្គ", "ប្រាសាទ", "អង្គរវត្ត", "កសិករ", "ស្រូវ", "សិស្ស", "សាលារៀន",
            "ភ្នំពេញ", "ខេត្ត", "សៀមរាប", "ភ្លៀង", "រដូវ", "វស្សា", "ថ្ងៃ", "ច័ន្ទ", "ភាសា", "ខ្មែរ"]
EN_WORDS = ["river", "temple", "farmer", "rice", "school", "student", "city", "province", "rain", "season",
            "capital", "kingdom", "market", "village", "water", "forest", "mountain", "road", "bridge", "boat"]


def make_docs(words, n, seed, sep=" "):
    """``n`` distinct pseudo-sentences (distinct enough not to be near-duplicates)."""
    rng = np.random.default_rng(seed)
    return [sep.join(rng.choice(words, size=int(rng.integers(12, 30)))) + ("។" if sep == "" else ".")
            for _ in range(n)]


def km_docs(n, seed=0):
    return make_docs(KM_WORDS, n, seed, sep="")


def en_docs(n, seed=1):
    return make_docs(EN_WORDS, n, seed)


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def cfg(tmp_path, **kw):
    kw.setdefault("output_dir", str(tmp_path / "out"))
    kw.setdefault("min_validation_docs", 1)
    return PrepareConfig(**kw)
