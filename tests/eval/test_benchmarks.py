import json
import math
from pathlib import Path

import pytest

from tonsai.errors import StageError
from tonsai.eval.benchmarks import SIB200_LABELS, load_belebele, load_parallel, load_sib200
from tonsai.eval.suites import load_suite, run_suites

REPO = Path(__file__).resolve().parents[2]


def test_parallel_on_ntrex_and_flores_subsets(shared_data):
    ntrex = load_parallel(shared_data, "ntrex128_khm_eng_dev")
    eng = (shared_data / "ntrex128_khm_eng_dev" / "eng_Latn.txt").read_text(encoding="utf-8").splitlines()
    assert len(ntrex) == 1007 == len(eng)
    assert ntrex[0]["target"] == eng[0] == ntrex[0]["eng_Latn"] and ntrex[0]["id"] == 1
    flores = load_parallel(shared_data, "sib200_flores_khm_eng_dev", source="eng_Latn", target="khm_Khmr")
    assert len(flores) == 420
    assert flores[0]["source"].startswith("On Monday, scientists from the Stanford University")


def test_parallel_release_layout_and_misaligned_files(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "khm_Khmr.dev").write_text("ក\nខ\n", encoding="utf-8")
    (tmp_path / "dev" / "eng_Latn.dev").write_text("a\nb\n", encoding="utf-8")
    items = load_parallel(tmp_path, ".")
    assert [(i["source"], i["target"]) for i in items] == [("ក", "a"), ("ខ", "b")]
    (tmp_path / "dev" / "eng_Latn.dev").write_text("a\n", encoding="utf-8")
    with pytest.raises(StageError, match="khm_Khmr has 2 lines but eng_Latn has 1"):
        load_parallel(tmp_path, ".")
    with pytest.raises(StageError, match="neither fra_Latn.txt nor dev/fra_Latn.dev found for language fra_Latn"):
        load_parallel(tmp_path, ".", target="fra_Latn")


def test_sib200_shared_items(shared_data):
    folder = shared_data / "sib200_flores_khm_eng_dev"
    every = load_sib200(folder, ".")
    dev = load_sib200(folder, ".", split="dev")
    train = load_sib200(folder, ".", split="train", lang="eng_Latn")
    assert (len(every), len(dev), len(train)) == (420, 47, 373)
    labels = (folder / "labels.txt").read_text(encoding="utf-8").split()
    rows = [json.loads(x) for x in (folder / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    for item, row in zip(every, rows):
        assert item["text"] == row["khm_Khmr"] and item["choices"] == labels
        assert labels[item["answer"]] == row["category"]
    named = load_sib200(folder, ".", split="dev", label_names={"sports": "កីឡា"})
    assert "កីឡា" in named[0]["choices"] and "sports" not in named[0]["choices"]


def test_sib200_repository_tsv_layout(tmp_path):
    d = tmp_path / "data" / "annotated" / "khm_Khmr"
    d.mkdir(parents=True)
    (d / "dev.tsv").write_text('index_id\tcategory\ttext\n7\ttravel\t"ក, ខ"\n9\thealth\tគ\n', encoding="utf-8")
    items = load_sib200(tmp_path, ".", split="dev")
    assert [(i["id"], i["text"], SIB200_LABELS[i["answer"]]) for i in items] == [("7", "ក, ខ", "travel"), ("9", "គ", "health")]
    (d / "dev.tsv").write_text("index_id\tcategory\ttext\n1\tcooking\tក\n", encoding="utf-8")
    with pytest.raises(StageError, match="category 'cooking'"):
        load_sib200(tmp_path, ".", split="dev")


def _belebele_row(n, answer=2, dialect="khm_Khmr"):
    return {"link": "https://example.org", "question_number": n, "flores_passage": f"អត្ថបទទី{n}",
            "question": f"សំណួរទី{n}?", "mc_answer1": "ក", "mc_answer2": "ខ", "mc_answer3": "គ",
            "mc_answer4": "ឃ", "correct_answer_num": str(answer), "dialect": dialect, "ds": "2023-05-03"}


def test_belebele_format(tmp_path):
    rows = [_belebele_row(1, 2), _belebele_row(2, 4), _belebele_row(3, 1, dialect="eng_Latn")]
    path = tmp_path / "khm_Khmr.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    items = load_belebele(tmp_path, str(path))
    assert [(i["id"], i["answer"], i["choices"][i["answer"]]) for i in items] == [(1, 1, "ខ"), (2, 3, "ឃ")]
    assert load_belebele(tmp_path, ".") == items  # a folder holding <lang>.jsonl
    path.write_text(json.dumps(_belebele_row(1, 5)) + "\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"khm_Khmr\.jsonl:1: correct_answer_num must be 1\.\.4"):
        load_belebele(tmp_path, str(path))
    bad = _belebele_row(1)
    del bad["mc_answer3"]
    path.write_text(json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"khm_Khmr\.jsonl:1: missing Belebele field\(s\) mc_answer3"):
        load_belebele(tmp_path, str(path))


def test_belebele_task_runs_from_a_local_file(tmp_path, trained_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [_belebele_row(n, 1 + n % 4) for n in range(1, 5)]
    (tmp_path / "bb.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    shipped = (REPO / "eval_suites/belebele_khm/suite.yaml").read_text(encoding="utf-8")
    (tmp_path / "suite.yaml").write_text(shipped.replace("{hub: facebook/belebele, lang: khm_Khmr}",
                                                         "{path: bb.jsonl, lang: khm_Khmr}"), encoding="utf-8")
    res = run_suites(AutoModelForCausalLM.from_pretrained(trained_model),
                     AutoTokenizer.from_pretrained(trained_model), [tmp_path], "cpu", progress=False)
    scores = res["belebele_khm"]["belebele_km"]
    samples = res.samples["belebele_khm"]["belebele_km"]
    picked = [max(range(4), key=lambda i: s["loglikelihoods"][i]) for s in samples]
    assert scores["n"] == 4
    assert scores["acc"] == sum(p == s["answer"] for p, s in zip(picked, samples)) / 4
    assert [s["answer"] for s in samples] == [n % 4 for n in range(1, 5)]
    sample = samples[0]
    assert sample["choices"] == ["ក", "ខ", "គ", "ឃ"] and sample["answer"] == 1


def test_shipped_benchmark_suite_runs_on_shared_data(shared_data, trained_model, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.delenv("TONSAI_BENCHMARK_DATA", raising=False)
    with pytest.raises(StageError, match=r"TONSAI_BENCHMARK_DATA\}, which is not set"):
        load_suite(REPO / "eval_suites/khmer_benchmarks")
    monkeypatch.setenv("TONSAI_BENCHMARK_DATA", str(shared_data))
    suite = load_suite(REPO / "eval_suites/khmer_benchmarks")
    sizes = {t.name: len(t.requests) for t in suite.tasks}
    assert sizes == {"sib200_km": 47, "sib200_en": 47, "flores_km_en": 420, "flores_en_km": 420,
                     "ntrex_km_en": 1007, "ntrex_en_km": 1007}
    model = AutoModelForCausalLM.from_pretrained(trained_model)
    tok = AutoTokenizer.from_pretrained(trained_model)
    res = run_suites(model, tok, [REPO / "eval_suites/khmer_benchmarks"], "cpu", batch_size=4, limit=2,
                     progress=False, max_new_tokens=8)
    res = res["khmer_benchmarks"]
    assert set(res) == set(sizes)
    assert all(r["n"] == 2 for r in res.values())
    # the Khmer checks that had something to judge in two 8-token answers of the tiny model
    assert {"chrf", "chrf_pp", "bleu", "km_empty_share"} <= set(res["flores_en_km"]) <= {
        "chrf", "chrf_pp", "bleu", "km_empty_share", "km_normalized_share", "km_script_share",
        "km_invalid_cluster_rate", "n"}
    assert all(math.isfinite(v) for r in res.values() for v in r.values())


def test_sib200_shots_from_the_train_split(shared_data, tmp_path):
    folder = shared_data / "sib200_flores_khm_eng_dev"
    (tmp_path / "suite.yaml").write_text(f"""name: s
tasks:
  - name: sib
    type: multiple_choice
    loader: sib200
    options: {{path: {folder}, lang: eng_Latn, split: dev}}
    few_shot: 2
    few_shot_from: {{split: train}}
    template: "Text: {{text}}\\nTopic:"
    choices: choices
    answer: answer
""", encoding="utf-8")
    reqs = load_suite(tmp_path).tasks[0].requests
    train = {i["text"] for i in load_sib200(folder, ".", lang="eng_Latn", split="train")}
    dev = load_sib200(folder, ".", lang="eng_Latn", split="dev")
    assert len(reqs) == 47
    for req, item in zip(reqs, dev):
        shots = req.prompt.split("\n\n")
        assert len(shots) == 3 and shots[-1] == f"Text: {item['text']}\nTopic:"
        for shot in shots[:2]:
            text, topic = shot[len("Text: "):].split("\nTopic: ")
            assert text in train and topic in SIB200_LABELS


def test_hub_loader_offline_fails_with_a_clear_message(tmp_path):
    # tests/conftest.py sets HF_HUB_OFFLINE=1 and an empty HF_HOME: nothing can come from the Hub
    with pytest.raises(StageError, match=r"could not load 'facebook/belebele' \(config 'khm_Khmr', split 'test'\)"
                                         r".*pass a local path"):
        load_belebele(tmp_path, hub="facebook/belebele")


def test_relative_benchmark_data_variable_is_relative_to_the_current_directory(shared_data, monkeypatch, tmp_path):
    """`export TONSAI_BENCHMARK_DATA=../shared/data`, as documented, from the checkout's root; a path the
    suite file itself writes relative stays relative to the suite's folder."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("TONSAI_BENCHMARK_DATA", "../shared/data")
    suite = load_suite(REPO / "eval_suites/khmer_benchmarks")
    sib = next(t for t in suite.tasks if t.name == "sib200_km")
    assert len(sib.requests) == 47 and sib.requests[0].choices
    monkeypatch.chdir(tmp_path)  # from elsewhere the same relative value names another folder, and says so
    with pytest.raises(StageError, match=str(tmp_path.parent / "shared" / "data")):
        load_suite(REPO / "eval_suites/khmer_benchmarks")
