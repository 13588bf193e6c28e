"""lm-evaluation-harness glue for tonsai's prompt suites (the YAML files beside this module).

lm-eval imports this file through the YAMLs' ``!function`` tags; it needs tonsai installed in the same
environment (``uv sync`` in the tonsai checkout installs both). Nothing here re-implements a suite:

- items, prompts, references, choices and answers come from :func:`tonsai.eval.suites.load_suite`
  on the suite the YAML names (``dataset_kwargs.tonsai_suite``, relative to this folder, and
  ``tonsai_task``). lm-eval resolves ``data_files`` against the working directory, so a shipped
  task reads its files through lm-eval's ``custom_dataset`` hook instead, which runs here and
  resolves the path against this folder;
- shots are chosen by :func:`tonsai.eval.suites.pick_shots` (:class:`SuiteShots`), so ``num_fewshot``
  in the YAML (or ``--num_fewshot``) gives the shots eval_model.py gives for the same count;
- scores are tonsai's own metric functions (:mod:`tonsai.eval.metrics`, the Khmer output checks), as
  lm-eval aggregations over ``(prediction, references, lang, raw text)`` per item.

tonsai scores every sequence after the end-of-text token (the way it trains); lm-eval's ``hf`` model
does that with ``--model_args ...,add_bos_token=True`` (a tonsai tokenizer's bos is its end-of-text
token). :func:`load_task` refuses model arguments without ``add_bos_token``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lm_eval.api.samplers import ContextSampler

from tonsai.eval import metrics as tm
from tonsai.eval.khmer_checks import CHECK_METRICS, khmer_output_checks
from tonsai.eval.suites import load_suite, pick_shots
from tonsai.text.normalize import normalize

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


def load_task(tonsai_suite: str, tonsai_task: str, **model_args):
    """lm-eval ``custom_dataset``: the task's items as a ``DatasetDict`` with one ``test`` split.

    Each doc: ``query`` (the item's prompt), ``target`` (its first reference: the shot's answer),
    ``references``, ``choices``, ``answer``, ``lang``, ``where`` (file:line), and ``index``,
    ``seed``, ``suite_task`` for :class:`SuiteShots`, and ``metrics`` (the names the task reports).
    ``model_args`` are lm-eval's metadata (the model arguments and ``--metadata``)."""
    import datasets

    if "pretrained" in model_args and "add_bos_token" not in model_args:
        raise ValueError(
            "tonsai suites score every sequence after the end-of-text token, as tonsai trains and as "
            "eval_model.py scores: add add_bos_token=True to --model_args (or add_bos_token=False to score "
            "without it, e.g. for a model that was not trained by tonsai)")
    path = Path(tonsai_suite)
    suite = load_suite((HERE / path).resolve())  # an absolute path stays as it is
    by_name = {t.name: t for t in suite.tasks}
    if tonsai_task not in by_name:
        raise ValueError(f"{suite.path}: no task {tonsai_task!r}; it has {', '.join(by_name)}")
    task = by_name[tonsai_task]
    scored = list(task.metrics)
    if task.type == "generate" and task.lang == "km" and task.khmer_checks:
        scored += CHECK_METRICS
    docs = [{"query": r.query, "target": r.reference[0] if r.reference else r.choices[r.answer],
             "references": r.reference, "choices": r.choices, "answer": r.answer, "lang": task.lang,
             "where": r.where, "index": i, "seed": task.seed, "suite_task": task.name, "metrics": scored}
            for i, r in enumerate(task.requests)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


class SuiteShots(ContextSampler):
    """lm-eval few-shot sampler with tonsai's choice: the shots of item i are
    ``pick_shots(seed, task, i, ...)`` from the task's own items, never the item itself."""

    def sample(self, n, eval_doc=None, df=None, **kwargs):
        if df:
            self.df = df
        pool = self.fewshot_docs()
        if eval_doc is None:
            raise ValueError("tonsai suite tasks draw shots from their own items: set fewshot_split to the test split")
        picks = pick_shots(eval_doc["seed"], eval_doc["suite_task"], eval_doc["index"], len(pool), n)
        return [pool[j] for j in picks]


# ------------------------------------------------------------------------------------------ results

def process_generation(doc, results):
    """Per item: the prediction as tonsai scores it (stripped, normalized), its references, the output
    language and the raw text, under each metric the suite task reports; the aggregations below turn
    them into tonsai's corpus scores. (The YAML's metric_list names the same metrics.)"""
    raw = results[0].strip()
    item = (normalize(raw), doc["references"], doc["lang"], raw)
    return {name: item for name in doc["metrics"]}


def process_choice(doc, results):
    """Per item: acc and acc_norm from the choices' summed log-likelihoods (tonsai's choice_scores:
    acc_norm divides by the choice's UTF-8 bytes)."""
    scores, _, _ = tm.choice_scores([[ll for ll, _ in results]], [doc["choices"]], [doc["answer"]])
    return scores


def _columns(items):
    preds, refs, langs, raws = zip(*items)
    return list(preds), list(refs), langs[0], list(raws)


def chrf(items):
    preds, refs, _, _ = _columns(items)
    return tm.chrf(preds, refs)


def chrf_pp(items):
    preds, refs, _, _ = _columns(items)
    return tm.chrf(preds, refs, word_order=2)


def bleu(items):
    preds, refs, lang, _ = _columns(items)
    return tm.bleu(preds, refs, lang)


def rouge_l(items):
    preds, refs, lang, _ = _columns(items)
    return tm.rouge_l(preds, refs, lang)


def exact_match(items):
    preds, refs, _, _ = _columns(items)
    return tm.exact_match(preds, refs)


def f1(items):
    preds, refs, lang, _ = _columns(items)
    return tm.f1(preds, refs, lang)


def _check(name):
    def aggregate(items):
        # NaN where the check had nothing to look at (no non-empty answer, no Khmer cluster, no letter):
        # the suite runner leaves it out; lm-eval needs a number for every metric its task declares
        return khmer_output_checks(_columns(items)[3]).get(name, float("nan"))
    aggregate.__name__ = name
    return aggregate


km_normalized_share = _check("km_normalized_share")
km_invalid_cluster_rate = _check("km_invalid_cluster_rate")
km_script_share = _check("km_script_share")
km_empty_share = _check("km_empty_share")
