import json
import math
from pathlib import Path

import pytest

from tonsai.errors import StageError
from tonsai.eval import metrics
from tonsai.eval.suites import load_suite, run_suites
from tonsai.text import normalize

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "eval_suites" / "khmer_core"


def write_suite(folder: Path, tasks: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "suite.yaml").write_text("name: t\ntasks:\n" + tasks, encoding="utf-8")
    return folder


QA_TASK = """  - name: qa
    type: generate
    data: qa.jsonl
    template: "Q: {q}\\nA:"
    target: "{a}"
    metrics: [exact_match, f1]
"""


def test_core_suite_loads_with_normalized_few_shot_prompts():
    suite = load_suite(CORE)
    assert suite.name == "khmer_core"
    tasks = {t.name: t for t in suite.tasks}
    assert set(tasks) == {"qa_km", "translate_km_en", "translate_en_km", "summarize_km", "topic_km", "reading_km"}
    assert all(len(t.requests) >= 8 for t in suite.tasks)
    qa = tasks["qa_km"]
    first = json.loads((CORE / "qa.jsonl").read_text(encoding="utf-8").splitlines()[0])
    req = qa.requests[0]
    # two shots, then the item itself; the shots are other items, each followed by its answer
    blocks = req.prompt.split("\n\n")
    assert len(blocks) == 3 and blocks[-1].endswith("ចម្លើយ៖") and first["question"] in blocks[-1]
    assert all(first["question"] not in b for b in blocks[:2])
    assert req.reference == first["answers"] and req.where.endswith("qa.jsonl:1")
    for t in suite.tasks:
        for r in t.requests:
            assert normalize(r.prompt) == r.prompt
            assert all(normalize(x) == x for x in r.reference + r.choices)
    assert [r.prompt for r in load_suite(CORE).tasks[0].requests] == [r.prompt for r in qa.requests]  # deterministic shots
    topic = tasks["topic_km"].requests
    assert topic[0].choices == ["កសិកម្ម", "អប់រំ", "សុខភាព", "កីឡា", "ទេសចរណ៍"] and topic[0].answer == 0
    assert {r.answer for r in topic} == set(range(5))


def test_run_core_suite_end_to_end(trained_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tonsai.eval.generate import loglikelihood

    tok = AutoTokenizer.from_pretrained(trained_model)
    model = AutoModelForCausalLM.from_pretrained(trained_model)
    res = run_suites(model, tok, [CORE], device="cpu", batch_size=4, limit=3, progress=False, max_new_tokens=12)
    core = res["khmer_core"]
    assert res.scores is res and json.loads(json.dumps(res)) == res
    # the Khmer checks that had something to look at (an empty or Latin answer has no clusters to judge)
    assert {"exact_match", "f1", "km_empty_share", "n"} <= set(core["qa_km"]) <= {
        "exact_match", "f1", "km_normalized_share", "km_invalid_cluster_rate", "km_script_share", "km_empty_share", "n"}
    assert set(core["translate_km_en"]) == {"chrf", "chrf_pp", "bleu", "n"}  # English output: no Khmer checks
    assert set(core["topic_km"]) == {"acc", "acc_norm", "n"}
    for task, scores in core.items():
        assert scores["n"] == 3, task
        assert all(math.isfinite(v) for v in scores.values())
    # scores are what the metrics give on the recorded samples
    qa = res.samples["khmer_core"]["qa_km"]
    assert core["qa_km"]["f1"] == pytest.approx(metrics.f1([s["prediction"] for s in qa],
                                                           [s["reference"] for s in qa], "km"))
    tr = res.samples["khmer_core"]["translate_km_en"]
    assert core["translate_km_en"]["chrf"] == pytest.approx(
        metrics.chrf([s["prediction"] for s in tr], [s["reference"] for s in tr]))
    # multiple choice: the recorded log-likelihoods are the scorer's, the accuracy follows from them
    topic = res.samples["khmer_core"]["topic_km"]
    s0 = topic[0]
    direct = [ll for ll, _ in loglikelihood(model, tok, [(s0["prompt"], " " + c) for c in s0["choices"]])]
    assert s0["loglikelihoods"] == pytest.approx(direct, abs=1e-4)
    acc = sum(max(range(len(s["choices"])), key=lambda i: s["loglikelihoods"][i]) == s["answer"] for s in topic) / 3
    assert core["topic_km"]["acc"] == pytest.approx(acc)


def test_relative_paths_resolve_against_the_suite_folder(tmp_path, monkeypatch):
    folder = write_suite(tmp_path / "s", QA_TASK, {"qa.jsonl": '{"q": "x?", "a": "y"}\n\n{"q": "z?", "a": ["w", "v"]}\n'})
    monkeypatch.chdir(tmp_path)
    suite = load_suite(folder / "suite.yaml")
    reqs = suite.tasks[0].requests
    assert [r.prompt for r in reqs] == ["Q: x?\nA:", "Q: z?\nA:"]
    assert [r.reference for r in reqs] == [["y"], ["w", "v"]]
    assert reqs[1].where.endswith("qa.jsonl:3")  # the blank line counts


def test_missing_suite_file_says_what_to_pass(tmp_path):
    with pytest.raises(StageError, match=r"suite file not found: .*nowhere.*suite.yaml"):
        load_suite(tmp_path / "nowhere")


def test_malformed_jsonl_line_is_named(tmp_path):
    folder = write_suite(tmp_path, QA_TASK, {"qa.jsonl": '{"q": "x", "a": "y"}\n{"q": "broken\n'})
    with pytest.raises(StageError, match=r"qa\.jsonl:2: malformed JSON"):
        load_suite(folder)


def test_empty_task_and_missing_data_file(tmp_path):
    with pytest.raises(StageError, match=r"task 'qa' has no items .*add items or remove the task"):
        load_suite(write_suite(tmp_path / "a", QA_TASK, {"qa.jsonl": "\n"}))
    with pytest.raises(StageError, match=r"task 'qa': data file .*qa\.jsonl not found"):
        load_suite(write_suite(tmp_path / "b", QA_TASK, {}))


def test_missing_field_names_file_line_and_field(tmp_path):
    folder = write_suite(tmp_path, QA_TASK, {"qa.jsonl": '{"q": "x", "a": "y"}\n{"question": "x", "a": "y"}\n'})
    with pytest.raises(StageError, match=r"qa\.jsonl:2: the template needs field 'q'.*it has: a, question"):
        load_suite(folder)


@pytest.mark.parametrize("extra, message", [
    ("    metric: [f1]\n", r"unknown key\(s\) metric"),
    ("    few_shot: 5\n", r"few_shot 5 needs at least 6 items"),
])
def test_bad_task_options(tmp_path, extra, message):
    folder = write_suite(tmp_path, QA_TASK + extra, {"qa.jsonl": '{"q": "x", "a": "y"}\n'})
    with pytest.raises(StageError, match=message):
        load_suite(folder)


def test_bad_metric_and_bad_answer(tmp_path):
    with pytest.raises(StageError, match=r"unknown metric\(s\) acc for a generate task"):
        load_suite(write_suite(tmp_path / "a", QA_TASK.replace("[exact_match, f1]", "[acc]"),
                               {"qa.jsonl": '{"q": "x", "a": "y"}\n'}))
    mc = """  - name: mc
    type: multiple_choice
    data: mc.jsonl
    template: "{q}"
    choices: opts
    answer: gold
"""
    with pytest.raises(StageError, match=r"mc\.jsonl:1: answer 4 is out of range for 2 choices"):
        load_suite(write_suite(tmp_path / "b", mc, {"mc.jsonl": '{"q": "x", "opts": ["a", "b"], "gold": 4}\n'}))
    ok = load_suite(write_suite(tmp_path / "c", mc, {"mc.jsonl": '{"q": "x", "opts": ["a", "b"], "gold": "b"}\n'}))
    assert ok.tasks[0].requests[0].answer == 1
    assert ok.tasks[0].metrics == ["acc", "acc_norm"]


def test_few_shot_from_another_file_with_instruction(tmp_path):
    task = QA_TASK + """    few_shot: 2
    few_shot_from: shots.jsonl
    instruction: "Answer briefly."
    few_shot_separator: "\\n---\\n"
    target_delimiter: "  "
"""
    folder = write_suite(tmp_path, task, {"qa.jsonl": '{"q": "x?", "a": "y"}\n',
                                          "shots.jsonl": '{"q": "s1?", "a": "t1"}\n{"q": "s2?", "a": "t2"}\n'})
    prompt = load_suite(folder).tasks[0].requests[0].prompt
    blocks = prompt.split("\n---\n")
    assert blocks[0] == "Answer briefly." and blocks[-1] == "Q: x?\nA:"
    assert sorted(blocks[1:3]) == ["Q: s1?\nA:  t1", "Q: s2?\nA:  t2"]


def test_items_that_do_not_fit_the_context_are_refused_before_any_task_runs(trained_model, model_and_tok, tmp_path):
    """The model's context is 256 tokens: a generate budget of 300, or a choice longer than 256 tokens, is
    a StageError naming the suite file, task and item, found before the first task (or any perplexity) runs."""
    import subprocess
    import sys

    long_choice = " ".join((REPO / "tonsai" / "sample_corpus" / "en.txt").read_text(encoding="utf-8").split()[:400])
    mc_task = """  - name: mc
    type: multiple_choice
    data: mc.jsonl
    template: "Q: {q}"
    choices: choices
    answer: a
"""
    mc_items = (json.dumps({"q": "one", "choices": ["yes", "no"], "a": 0}) + "\n"
                + json.dumps({"q": "two", "choices": ["yes", long_choice], "a": 0}) + "\n")
    folder = write_suite(tmp_path / "mc", QA_TASK + mc_task, {"qa.jsonl": '{"q": "x", "a": "y"}\n', "mc.jsonl": mc_items})
    model, tok = model_and_tok
    with pytest.raises(StageError, match=r"suite\.yaml: task 'mc': .*mc\.jsonl:2: choice 1 is \d+ tokens, longer "
                                         r"than the model's context of 256 tokens; shorten the choice or remove"):
        run_suites(model, tok, [folder], device="cpu", progress=False)
    assert run_suites(model, tok, [folder], device="cpu", progress=False, limit=1)["t"]["mc"]["n"] == 1

    long_gen = QA_TASK.replace("name: qa", "name: long") + "    max_new_tokens: 300\n"
    folder = write_suite(tmp_path / "gen", QA_TASK + long_gen, {"qa.jsonl": '{"q": "x", "a": "y"}\n'})
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "eval_model.py"), "--model-dir", str(trained_model),
                        "--text", f"en={REPO / 'tonsai' / 'sample_corpus' / 'en.txt'}", "--suite", str(folder),
                        "--output-dir", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert f"{folder / 'suite.yaml'}: task 'long': max_new_tokens 300 leaves no room for a prompt" in line
    assert "at most 254" in line
    assert "en: loss" not in r.stderr  # refused before the perplexity, not after it
    assert not out.exists()


def test_two_suites_with_one_name_are_refused_before_the_model_loads(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(REPO / "scripts" / "eval_model.py"), "--model-dir", str(tmp_path / "none"),
                        "--suite", str(CORE), str(CORE), "--output-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 1 and "two suites share a name" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "out").exists()
