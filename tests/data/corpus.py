"""Small generated Khmer and English corpora, a few real sentences in each (KM, EN), and a PrepareConfig
with test defaults, shared by the prepare-stage tests (sources, filters, dedup, mix, prepare, toxic
lexicon, executors)."""

from pathlib import Path

import numpy as np

from tonsai.data.prepare import PrepareConfig

REPO = Path(__file__).resolve().parents[2]
KM_WORDS = ["ប្រទេស", "កម្ពុជា", "ទន្លេ", "មេគង្គ", "ប្រាសាទ", "អង្គរវត្ត", "កសិករ", "ស្រូវ", "សិស្ស", "សាលារៀន",
            "ភ្នំពេញ", "ខេត្ត", "សៀមរាប", "ភ្លៀង", "រដូវ", "វស្សា", "ថ្ងៃ", "ច័ន្ទ", "ភាសា", "ខ្មែរ"]
EN_WORDS = ["river", "temple", "farmer", "rice", "school", "student", "city", "province", "rain", "season",
            "capital", "kingdom", "market", "village", "water", "forest", "mountain", "road", "bridge", "boat"]
# a few real sentences per language (the prepare and toxic-lexicon tests' small corpus)
KM = [
    "ប្រទេសកម្ពុជាស្ថិតនៅក្នុងតំបន់អាស៊ីអាគ្នេយ៍។ រាជធានីរបស់ប្រទេសកម្ពុជាគឺភ្នំពេញ។",
    "ទន្លេមេគង្គហូរកាត់ប្រទេសកម្ពុជាពីខាងជើងទៅខាងត្បូង។ អ្នកនេសាទជាច្រើនរស់នៅតាមមាត់ទន្លេ។",
    "ប្រាសាទអង្គរវត្តជាប្រាសាទដ៏ធំបំផុតនៅលើពិភពលោក។ ប្រាសាទនេះស្ថិតនៅខេត្តសៀមរាប។",
    "កសិករខ្មែរដាំស្រូវនៅរដូវវស្សា។ ពួកគេភ្ជួររាស់ដីមុនពេលភ្លៀងធ្លាក់។",
    "សិស្សទៅសាលារៀនរៀងរាល់ថ្ងៃចន្ទដល់ថ្ងៃសុក្រ។ ពួកគេរៀនភាសាខ្មែរ គណិតវិទ្យា និងវិទ្យាសាស្ត្រ។",
]
EN = [
    "Cambodia is located in Southeast Asia. The capital of Cambodia is Phnom Penh.",
    "The Mekong River flows through Cambodia from north to south.",
    "Angkor Wat is the largest temple in the world and lies in Siem Reap province.",
    "Khmer farmers plant rice in the rainy season before the rain falls.",
    "Students go to school every day from Monday to Friday to study science.",
    "The weather in Cambodia is hot all year round, with a rainy and a dry season.",
]


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
