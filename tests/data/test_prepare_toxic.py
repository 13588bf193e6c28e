"""The safety lexicon as an optional prepare filter (--toxic-lexicon): drop reason toxic_lexicon,
counted like every other reason, and part of the document tasks' settings."""

import gzip
import json

from tests.data.corpus import EN, KM, REPO, write_lines
from tonsai.data.prepare import PrepareConfig, run_prepare
from tonsai.data.prepared import load_prepared

LEXICON = str(REPO / "eval_suites" / "safety")
TOXIC_KM = "អាឆ្កែ ឯងល្ងង់ណាស់ ចេញពីភូមិនេះទៅ បើមិនចេញ ខ្ញុំនឹងសម្លាប់ឯង។"  # 3 hits in 60 characters
TOXIC_EN = "Shut up, you idiot. I will kill you."  # 3 hits in 36 characters
# a news report that names one crime among 400 characters: 2.5 hits per 1,000, under the default 5
NEWS_KM = "ប៉ូលិសបានចាប់ខ្លួនជនសង្ស័យពីរនាក់ ពីបទជួញដូរគ្រឿងញៀននៅខេត្តបាត់ដំបង។ " + " ".join(KM[1:])


def test_toxic_lexicon_drops_with_its_reason_and_redoes_finished_tasks(tmp_path):
    km = write_lines(tmp_path / "km.txt", KM + [TOXIC_KM, NEWS_KM])
    en = write_lines(tmp_path / "en.txt", EN + [TOXIC_EN])
    base = dict(khmer=[km], english=[en], min_validation_docs=1, work_dir=str(tmp_path / "work"), keep_work_dir=True,
                write_rejected=True)

    plain = run_prepare(PrepareConfig(output_dir=str(tmp_path / "plain"), **base))
    assert not any("toxic" in k for c in plain["counts"].values() for k in c)

    # same work folder: its finished document tasks were made without the filter and must be redone
    m = run_prepare(PrepareConfig(output_dir=str(tmp_path / "out"), toxic_lexicon=[LEXICON], **base))
    c = m["counts"]
    assert c["km:km.txt"]["dropped:toxic_lexicon"] == 1 and c["en:en.txt"]["dropped:toxic_lexicon"] == 1
    for name, counts in c.items():  # every document read is still kept or dropped with a reason
        dropped = sum(v for k, v in counts.items() if k.startswith("dropped:"))
        assert counts["read"] == counts["kept"] + dropped, name
    assert c["km:km.txt"]["kept"] == plain["counts"]["km:km.txt"]["kept"] - 1
    dd, manifest = load_prepared(tmp_path / "out")
    texts = set(dd["train"]["text"]) | set(dd["validation"]["text"])
    assert TOXIC_KM not in texts and TOXIC_EN not in texts
    assert manifest["config"]["toxic_lexicon"] == [LEXICON] and manifest["config"]["toxic_min_hits_per_1k"] == 5.0
    rejected = [json.loads(line) for f in (tmp_path / "out" / "rejected").glob("filters-toxic-*.jsonl.gz")
                for line in gzip.open(f, "rt", encoding="utf-8")]
    # exactly the two dense documents: the news report's single term is below the density threshold
    assert sorted(r["text"] for r in rejected) == sorted([TOXIC_EN, TOXIC_KM])
    assert {r["reason"] for r in rejected} == {"toxic_lexicon"}
