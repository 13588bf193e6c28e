"""The khmer_core suite as lm-eval tasks (eval_suites/lm_eval) gives what tonsai's own runner gives:
the same items, prompts and settings (every item, no model), and the same scores on a model the
project trained (lm-eval's simple_evaluate against run_suites, the function eval_model.py calls); and
lm-eval's `hf` model loads a model the project exported and scores what the model itself gives."""

import pytest
import torch

from tonsai.eval.suites import load_suite, run_suites
from tonsai.text import normalize

from ..conftest import REPO

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency (uv sync installs it)")

TASKS = REPO / "eval_suites" / "lm_eval"
CORE = REPO / "eval_suites" / "khmer_core"
GROUP = "tonsai_khmer_core"


def task_manager(**metadata):
    """Our YAMLs only (indexing lm-eval's 10k built-in YAMLs costs a minute); ``metadata`` is what the
    CLI passes: the model arguments."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS), include_defaults=False, metadata=metadata or None)


@pytest.mark.parametrize("suite_name", ["khmer_core", "khmer_benchmarks"])
def test_lm_eval_tasks_have_the_suite_items_prompts_and_settings(suite_name, request, monkeypatch):
    if suite_name == "khmer_benchmarks":  # SIB-200, FLORES and NTREX files beside the dev checkout
        monkeypatch.setenv("TONSAI_BENCHMARK_DATA", str(request.getfixturevalue("shared_data")))
    group = f"tonsai_{suite_name}"
    loaded = task_manager().load([group])
    suite = load_suite(REPO / "eval_suites" / suite_name)
    assert set(loaded["tasks"]) == {f"{group}_{t.name}" for t in suite.tasks}
    for st in suite.tasks:
        task = loaded["tasks"][f"{group}_{st.name}"]
        cfg = task.config
        assert (cfg.num_fewshot, cfg.target_delimiter, cfg.fewshot_delimiter) == \
            (st.few_shot, st.target_delimiter, st.few_shot_separator), st.name
        docs = list(task.test_docs())
        assert [d["where"] for d in docs] == [r.where for r in st.requests]
        # lm-eval builds each prompt: its shots (SuiteShots) + delimiters + the item's query
        assert [task.fewshot_context(d, cfg.num_fewshot) for d in docs] == [r.prompt for r in st.requests], st.name
        reported = [m["metric"] for m in cfg.metric_list]
        if st.type == "generate":
            assert [d["references"] for d in docs] == [r.reference for r in st.requests]
            gen = cfg.generation_kwargs
            assert (gen["until"], gen["max_gen_toks"], gen["do_sample"]) == (st.stop, st.max_new_tokens, False)
            assert reported == docs[0]["metrics"] and reported[:len(st.metrics)] == st.metrics, st.name
        else:
            assert [(d["choices"], d["answer"]) for d in docs] == [(r.choices, r.answer) for r in st.requests]
            assert reported == st.metrics == ["acc", "acc_norm"]


def test_num_fewshot_override_gives_the_suite_with_that_few_shot(tmp_path):
    """``--num_fewshot 3`` on the lm-eval task = ``few_shot: 3`` in suite.yaml (same shots, same order)."""
    import shutil

    shutil.copytree(CORE, tmp_path / "khmer_core")
    text = (CORE / "suite.yaml").read_text(encoding="utf-8")
    (tmp_path / "khmer_core" / "suite.yaml").write_text(text.replace("few_shot: 2", "few_shot: 3", 1), encoding="utf-8")
    three = {t.name: t for t in load_suite(tmp_path / "khmer_core").tasks}["qa_km"]
    assert three.few_shot == 3
    task = task_manager().load([f"{GROUP}_qa_km"])["tasks"][f"{GROUP}_qa_km"]
    assert [task.fewshot_context(d, 3) for d in task.test_docs()] == [r.prompt for r in three.requests]


def test_lm_eval_tasks_refuse_model_args_without_add_bos_token():
    with pytest.raises(ValueError, match="add_bos_token=True"):
        task_manager(pretrained="runs/x/final").load([f"{GROUP}_topic_km"])


def test_lm_eval_scores_equal_the_suite_runner_on_a_trained_model(trained_model):
    """Same prompts, same greedy texts item by item, the same log-likelihoods, and so the same scores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    limit = 2  # the first 2 items of each task on both sides (both take the first items)
    args = {"pretrained": str(trained_model), "add_bos_token": True}
    out = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=[GROUP], task_manager=task_manager(**args),
                                  limit=limit, batch_size=1, device="cpu", log_samples=True, bootstrap_iters=0)
    model = AutoModelForCausalLM.from_pretrained(trained_model).eval()
    ours = run_suites(model, AutoTokenizer.from_pretrained(trained_model), [CORE], device="cpu", batch_size=1,
                      limit=limit, progress=False)
    for name, scores in ours["khmer_core"].items():
        theirs = out["results"][f"{GROUP}_{name}"]
        samples = sorted(out["samples"][f"{GROUP}_{name}"], key=lambda s: s["doc_id"])
        mine = ours.samples["khmer_core"][name]
        assert [s["doc"]["where"] for s in samples] == [m["where"] for m in mine]
        assert [s["arguments"][0][0] for s in samples] == [m["prompt"] for m in mine], name
        if "raw" in mine[0]:  # generate: the same text item by item, so every metric is the same number
            assert [s["resps"][0][0] for s in samples] == [m["raw"] for m in mine], name
            assert [normalize(s["filtered_resps"][0].strip()) for s in samples] == [m["prediction"] for m in mine]
        else:
            for s, m in zip(samples, mine):
                assert [ll for (ll, _), in s["resps"]] == pytest.approx(m["loglikelihoods"], abs=1e-4), name
        metrics = {k: v for k, v in scores.items() if k != "n"}
        assert {k: theirs[f"{k},none"] for k in metrics} == metrics, name
        assert out["n-samples"][f"{GROUP}_{name}"]["effective"] == scores["n"] == limit
    # the comparison is not between two empty outputs: the tiny model writes text that chrF can score
    assert ours["khmer_core"]["translate_km_en"]["chrf"] > 0


def test_lm_evaluation_harness_loads_the_exported_model(trained_model, model_and_tok):
    """lm-eval's `hf` model (HFLM) loads the folder and scores exactly what the model itself gives."""
    pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency (uv sync installs it)")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(trained_model), device="cpu", batch_size=2)
    model, tok = model_and_tok
    assert lm.eot_token_id == tok.eos_token_id and lm.max_length == model.config.n_positions
    pairs = [(normalize("ប្រទេសកម្ពុជា"), normalize("ស្ថិតនៅអាស៊ី")), ("Cambodia is", " in Asia")]
    got = lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=a, idx=i)
                            for i, a in enumerate(pairs)], disable_tqdm=True)
    for (ctx, cont), (logprob, _) in zip(pairs, got):
        ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
        whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        cont_ids = whole[len(ctx_ids):]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
        ref = sum(logits[len(ctx_ids) - 1 + j, t].item() for j, t in enumerate(cont_ids))
        assert logprob == pytest.approx(ref, abs=1e-3)
