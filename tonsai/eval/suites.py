"""Prompt suites: tasks declared in a YAML file with items in JSONL (or from a benchmark loader), run
on a causal LM. The file format is documented in eval_suites/README.md.

    suite = load_suite("eval_suites/khmer_core")           # a folder with suite.yaml, or the YAML file
    results = run_suites(model, tokenizer, ["eval_suites/khmer_core"], device="cpu", limit=20)
    results["khmer_core"]["qa_km"]      # {"exact_match": 0.1, "f1": 0.3, ..., "n": 20}
    results.samples["khmer_core"]["qa_km"][0]   # {"prompt", "prediction", "reference", ...}

Two task types:

- ``generate``: greedy generation (:func:`tonsai.eval.generate.generate_greedy`) until a stop string,
  scored against the rendered ``target`` with the task's ``metrics`` (:mod:`tonsai.eval.metrics`);
  tasks whose output language is Khmer also get the checks of :mod:`tonsai.eval.khmer_checks`.
- ``multiple_choice``: the log-likelihood of each choice after the prompt
  (:func:`tonsai.eval.generate.loglikelihood`), scored by ``acc`` and ``acc_norm``.

Everything a task reads is rendered and normalized (:func:`tonsai.text.normalize`) when the suite
loads, so a missing field or a bad line fails before any model runs; errors are
:class:`tonsai.errors.StageError` naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import string
from pathlib import Path
from typing import Any, Sequence

import yaml

from tonsai.errors import StageError
from tonsai.eval.benchmarks import LOADERS, read_jsonl
from tonsai.eval.khmer_checks import khmer_output_checks
from tonsai.eval.metrics import CHOICE_METRICS, GENERATION_METRICS, choice_scores, generation_scores
from tonsai.model.build import context_length
from tonsai.sft.template import chat_prompt_ids, stop_token_ids
from tonsai.text.normalize import normalize

# tonsai.eval.generate (torch and transformers: 2.4 s to import on a 2-core machine) is imported inside
# _generate and _loglikelihoods, the functions that run a model: loading and checking a suite (eval_model.py
# before its model loads, and its --help) must not pay it.

log = logging.getLogger(__name__)

TASK_TYPES = ("generate", "multiple_choice")
SUITE_FILE = "suite.yaml"
_TASK_KEYS = {"name", "type", "description", "data", "loader", "options", "template", "target", "choices",
              "answer", "target_delimiter", "instruction", "few_shot", "few_shot_from", "few_shot_separator",
              "metrics", "lang", "max_new_tokens", "stop", "seed", "khmer_checks"}
_SUITE_KEYS = {"name", "description", "tasks", "defaults"}


@dataclasses.dataclass
class Request:
    """One rendered item: the prompt and what it is scored against."""

    prompt: str
    reference: list[str] = dataclasses.field(default_factory=list)  # generate: one or more references
    choices: list[str] = dataclasses.field(default_factory=list)    # multiple_choice
    answer: int = -1
    where: str = ""  # file:line or loader:id of the item
    query: str = ""  # the item's own rendered prompt, before shots and instruction are put in front


@dataclasses.dataclass
class Task:
    name: str
    type: str
    requests: list[Request]
    metrics: list[str]
    lang: str = "km"
    target_delimiter: str = " "
    max_new_tokens: int = 64
    stop: list[str] = dataclasses.field(default_factory=lambda: ["\n"])
    khmer_checks: bool = True
    source: str = ""
    few_shot: int = 0
    few_shot_separator: str = "\n\n"
    seed: int = 0


@dataclasses.dataclass
class Suite:
    name: str
    path: Path
    tasks: list[Task]
    description: str = ""


class SuiteResults(dict):
    """``{suite: {task: {metric: float, ..., "n": int}}}`` (a plain dict, JSON-ready), with
    ``.scores`` (the same dict) and ``.samples``: ``{suite: {task: [{"prompt", "prediction",
    "reference", "where", ...}]}}`` (multiple choice: ``choices``, ``loglikelihoods``, ``answer``,
    ``predicted``) for inspection."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: dict[str, dict[str, list[dict]]] = {}

    @property
    def scores(self) -> dict:
        return self


# ----------------------------------------------------------------------------------------------- loading

def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def render(template: str, item: dict, where: str, what: str) -> str:
    """``template`` with ``{field}`` replaced by the item's values; a missing field raises StageError."""
    try:
        return template.format_map(item)
    except KeyError as e:
        fields = sorted(k for k in item if not k.startswith("_"))
        raise StageError(f"{where}: the {what} needs field {e.args[0]!r}, which this item does not have "
                         f"(it has: {', '.join(fields)}); add the field or fix the {what}") from None
    except (ValueError, IndexError, AttributeError) as e:
        raise StageError(f"{where}: bad {what} {template!r}: {e}; write fields as {{name}} and literal "
                         f"braces as {{{{ and }}}}") from None


def _where(item: dict, source: str) -> str:
    if "_line" in item:
        return f"{item.get('_file', source)}:{item['_line']}"
    return f"{source} item {item.get('id', '?')}"


def _reference(spec: str, item: dict, where: str) -> list[str]:
    fields = _fields(spec)
    # "{answers}" naming a list field: every element is an accepted reference
    if spec.startswith("{") and spec.endswith("}") and len(fields) == 1 and spec == "{" + fields[0] + "}":
        value = item.get(fields[0])
        if isinstance(value, list):
            if not value or not all(isinstance(v, str) for v in value):
                raise StageError(f"{where}: field {fields[0]!r} must be a string or a non-empty list of strings")
            return [normalize(v) for v in value]
    return [normalize(render(spec, item, where, "target"))]


def _choices(spec: Any, item: dict, where: str) -> list[str]:
    if isinstance(spec, str):  # the name of a field holding a list
        value = item.get(spec)
        if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
            raise StageError(f"{where}: field {spec!r} must be a list of at least 2 strings (the choices)")
        return [normalize(v) for v in value]
    return [normalize(render(c, item, where, "choice")) for c in spec]


def _answer(spec: str, item: dict, choices: list[str], where: str) -> int:
    if spec not in item:
        raise StageError(f"{where}: no field {spec!r} (the answer: a 0-based index or the text of a choice)")
    value = item[spec]
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value < len(choices):
            raise StageError(f"{where}: answer {value} is out of range for {len(choices)} choices (0-based)")
        return value
    if isinstance(value, str) and normalize(value) in choices:
        return choices.index(normalize(value))
    raise StageError(f"{where}: answer {value!r} is neither a 0-based index nor the text of one of the choices")


def pick_shots(seed: int, task: str, index: int, pool_size: int, k: int, exclude_self: bool = True) -> list[int]:
    """Indices (into the pool) of the ``k`` shots of item ``index``, deterministic per (seed, task, item).

    With ``exclude_self`` the pool is the task's own items and the item is never its own shot. The
    lm-eval tasks in eval_suites/lm_eval pick their shots with this function too."""
    rng = random.Random(f"{seed}:{task}:{index}")
    if exclude_self:
        return rng.sample([j for j in range(pool_size) if j != index], k)
    return rng.sample(range(pool_size), k)


def _load_items(spec: dict, base: Path, yaml_path: Path, task: str, key: str = "data") -> tuple[list[dict], str]:
    if spec.get("loader"):
        name = spec["loader"]
        if name not in LOADERS:
            raise StageError(f"{yaml_path}: task {task!r}: unknown loader {name!r}; known: {', '.join(sorted(LOADERS))}")
        options = spec.get("options") or {}
        if not isinstance(options, dict):
            raise StageError(f"{yaml_path}: task {task!r}: `options` must be a mapping of loader options")
        try:
            items = LOADERS[name](base, **options)
        except TypeError as e:
            raise StageError(f"{yaml_path}: task {task!r}: bad options for loader {name!r}: {e}") from None
        return items, f"{name}:{options.get('path') or options.get('hub')}"
    if not spec.get(key):
        raise StageError(f"{yaml_path}: task {task!r} needs `data:` (a JSONL file) or `loader:` (one of "
                         f"{', '.join(sorted(LOADERS))})")
    path = Path(spec[key])
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise StageError(f"{yaml_path}: task {task!r}: data file {path} not found (paths are relative to the "
                         f"suite file's folder)")
    return read_jsonl(path), str(path)


def _build_task(spec: dict, base: Path, yaml_path: Path) -> Task:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise StageError(f"{yaml_path}: every task needs a `name:`")
    unknown = set(spec) - _TASK_KEYS
    if unknown:
        raise StageError(f"{yaml_path}: task {name!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(_TASK_KEYS))}")
    kind = spec.get("type")
    if kind not in TASK_TYPES:
        raise StageError(f"{yaml_path}: task {name!r}: `type:` must be one of {', '.join(TASK_TYPES)}, got {kind!r}")
    template = spec.get("template")
    if not isinstance(template, str) or not template:
        raise StageError(f"{yaml_path}: task {name!r}: `template:` (the prompt, with {{field}} placeholders) is missing")
    if kind == "generate" and not isinstance(spec.get("target"), str):
        raise StageError(f"{yaml_path}: task {name!r}: a generate task needs `target:` (the reference, e.g. '{{answer}}')")
    if kind == "multiple_choice" and ("choices" not in spec or "answer" not in spec):
        raise StageError(f"{yaml_path}: task {name!r}: a multiple_choice task needs `choices:` (a field name "
                         f"or a list of templates) and `answer:` (a field name)")
    lang = spec.get("lang", "km")
    known = GENERATION_METRICS if kind == "generate" else CHOICE_METRICS
    metrics = spec.get("metrics") or (["acc", "acc_norm"] if kind == "multiple_choice" else ["chrf"])
    bad = [m for m in metrics if m not in known]
    if bad:
        raise StageError(f"{yaml_path}: task {name!r}: unknown metric(s) {', '.join(bad)} for a {kind} task; "
                         f"known: {', '.join(known)}")

    items, source = _load_items(spec, base, yaml_path, name)
    if not items:
        raise StageError(f"{yaml_path}: task {name!r} has no items ({source} is empty); add items or remove the task")
    k = int(spec.get("few_shot", 0))
    if k < 0:
        raise StageError(f"{yaml_path}: task {name!r}: few_shot must be 0 or more")
    pool, same_pool = items, True
    if k and spec.get("few_shot_from") is not None:
        src = spec["few_shot_from"]
        if isinstance(src, dict):  # loader options that differ for the shots (e.g. split: train)
            if not spec.get("loader"):
                raise StageError(f"{yaml_path}: task {name!r}: few_shot_from as options needs a `loader:`")
            pool, _ = _load_items({**spec, "options": {**(spec.get("options") or {}), **src}}, base, yaml_path, name)
        else:
            pool, _ = _load_items({"data": src}, base, yaml_path, name)
        same_pool = False
    if k and len(pool) - same_pool < k:
        raise StageError(f"{yaml_path}: task {name!r}: few_shot {k} needs at least {k + same_pool} items to draw "
                         f"shots from, there are {len(pool)}")

    delim = spec.get("target_delimiter", " ")
    sep = spec.get("few_shot_separator", "\n\n")
    instruction = spec.get("instruction", "")
    seed = int(spec.get("seed", 0))

    def rendered(item: dict) -> Request:
        where = _where(item, source)
        prompt = normalize(render(template, item, where, "template"))
        if kind == "generate":
            return Request(prompt, reference=_reference(spec["target"], item, where), where=where)
        choices = _choices(spec["choices"], item, where)
        return Request(prompt, choices=choices, answer=_answer(spec["answer"], item, choices, where), where=where)

    shots_all = [rendered(it) for it in pool] if k and not same_pool else None
    requests = []
    for i, item in enumerate(items):
        req = rendered(item)
        req.query = req.prompt
        if k:
            picks = pick_shots(seed, name, i, len(pool), k, exclude_self=same_pool)
            shots = [rendered(items[j]) for j in picks] if same_pool else [shots_all[j] for j in picks]
            texts = [s.prompt + delim + (s.reference[0] if kind == "generate" else s.choices[s.answer])
                     for s in shots]
            req.prompt = sep.join(texts + [req.prompt])
        if instruction:
            req.prompt = normalize(instruction) + sep + req.prompt
        requests.append(req)
    stop = spec.get("stop", ["\n"])
    return Task(name=name, type=kind, requests=requests, metrics=list(metrics), lang=lang, target_delimiter=delim,
                max_new_tokens=int(spec.get("max_new_tokens", 64)), stop=[stop] if isinstance(stop, str) else list(stop),
                khmer_checks=bool(spec.get("khmer_checks", True)), source=source, few_shot=k,
                few_shot_separator=sep, seed=seed)


def load_suite(path: str | Path) -> Suite:
    """Read a suite: ``path`` is a suite YAML file or a folder holding ``suite.yaml``.

    Data paths in the file are relative to its folder. Raises StageError on any problem."""
    p = Path(path)
    yaml_path = p / SUITE_FILE if p.is_dir() else p
    if not yaml_path.is_file():
        raise StageError(f"suite file not found: {yaml_path}; pass a suite YAML file or a folder with "
                         f"{SUITE_FILE} (the shipped suites are in eval_suites/)")
    try:
        doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StageError(f"{yaml_path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list) or not doc["tasks"]:
        raise StageError(f"{yaml_path}: expected a mapping with a non-empty `tasks:` list (see eval_suites/README.md)")
    unknown = set(doc) - _SUITE_KEYS
    if unknown:
        raise StageError(f"{yaml_path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_SUITE_KEYS))}")
    defaults = doc.get("defaults") or {}
    tasks = []
    for spec in doc["tasks"]:
        if not isinstance(spec, dict):
            raise StageError(f"{yaml_path}: each entry of `tasks:` must be a mapping, got {spec!r}")
        tasks.append(_build_task({**defaults, **spec}, yaml_path.parent, yaml_path))
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StageError(f"{yaml_path}: task name(s) used twice: {', '.join(dupes)}")
    name = doc.get("name") or (yaml_path.parent.name if yaml_path.name == SUITE_FILE else yaml_path.stem)
    return Suite(name=str(name), path=yaml_path, tasks=tasks, description=doc.get("description", ""))


# ----------------------------------------------------------------------------------------------- running

def run_task(model, tokenizer, task: Task, device: str, batch_size: int = 8, limit: int | None = None,
             progress: bool = True, label: str = "", max_new_tokens: int | None = None, chat: bool = False
             ) -> tuple[dict[str, float | int], list[dict]]:
    """Scores and samples of one task on its first ``limit`` items; ``max_new_tokens`` caps the task's own.
    With ``chat`` every prompt is put in the chat template (:func:`tonsai.sft.template.chat_prompt_ids`), a
    generation also ends at
    the template's end-of-turn token, and a choice follows the assistant marker directly (no target
    delimiter)."""
    reqs = task.requests[:limit] if limit else task.requests
    desc = f"{label}{task.name}" if progress else None
    if task.type == "generate":
        budget = min(task.max_new_tokens, max_new_tokens) if max_new_tokens else task.max_new_tokens
        raw = _generate(model, tokenizer, [r.prompt for r in reqs], budget, task.stop, batch_size, device, desc,
                        chat)
        preds = [normalize(p.strip()) for p in raw]
        scores: dict[str, float | int] = dict(generation_scores(task.metrics, preds, [r.reference for r in reqs],
                                                                task.lang))
        if task.lang == "km" and task.khmer_checks:
            scores.update(khmer_output_checks([p.strip() for p in raw]))
        samples = [{"where": r.where, "prompt": r.prompt, "prediction": p, "raw": q,
                    "reference": r.reference if len(r.reference) > 1 else r.reference[0]}
                   for r, p, q in zip(reqs, preds, raw)]
    else:
        lls = _loglikelihoods(model, tokenizer, reqs, task.target_delimiter, batch_size, device, desc, chat)
        per_item, at = [], 0
        for r in reqs:
            per_item.append([ll for ll, _ in lls[at:at + len(r.choices)]])
            at += len(r.choices)
        metric_values, pred, pred_norm = choice_scores(per_item, [r.choices for r in reqs], [r.answer for r in reqs])
        scores = {m: metric_values[m] for m in task.metrics}
        samples = [{"where": r.where, "prompt": r.prompt, "choices": r.choices, "loglikelihoods": ll,
                    "answer": r.answer, "predicted": p, "predicted_norm": pn, "reference": r.choices[r.answer],
                    "prediction": r.choices[p]}
                   for r, ll, p, pn in zip(reqs, per_item, pred, pred_norm)]
    scores["n"] = len(reqs)
    return scores, samples


def _generate(model, tokenizer, prompts: list[str], budget: int, stop, batch_size: int, device: str, desc, chat: bool):
    from tonsai.eval.generate import generate_greedy, generate_greedy_ids

    if not chat:
        return generate_greedy(model, tokenizer, prompts, budget, stop, batch_size, device, progress=desc)
    return generate_greedy_ids(model, tokenizer, [chat_prompt_ids(tokenizer, p) for p in prompts], budget, stop,
                               batch_size, device, progress=desc, stop_ids=stop_token_ids(tokenizer))


def _choice_ids(tokenizer, req: Request, choice: str, delimiter: str, chat: bool) -> list[int]:
    """The token ids scored for one choice: ``delimiter + choice`` as it tokenizes after the prompt, or
    with ``chat`` the choice alone (it follows the assistant marker)."""
    if chat:
        return tokenizer(choice, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    from tonsai.eval.generate import _split_pair

    return _split_pair(tokenizer, req.prompt, delimiter + choice)[1]


def check_distinct_names(suites: Sequence[Suite]) -> None:
    """Results are keyed by suite name: two suites with one name would overwrite each other's."""
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise StageError(f"two suites share a name: {names}; give each suite.yaml its own `name:`")


def check_fits(suites: Sequence[Suite], tokenizer, context: int, limit: int | None = None,
               max_new_tokens: int | None = None, chat: bool = False) -> None:
    """Every task that will run fits a model of ``context`` tokens: a generate task's ``max_new_tokens``
    leaves room for a prompt (a longer prompt keeps its last tokens), and every scored choice of the
    first ``limit`` items of a multiple_choice task is non-empty and no longer than the context.
    Raises StageError naming the suite file, the task and the item; called before the first task runs."""
    for suite in suites:
        for task in suite.tasks:
            where = f"{suite.path}: task {task.name!r}"
            if task.type == "generate":
                budget = min(task.max_new_tokens, max_new_tokens) if max_new_tokens else task.max_new_tokens
                if context - budget < 2:
                    raise StageError(f"{where}: max_new_tokens {budget} leaves no room for a prompt in the model's "
                                     f"context of {context} tokens; set max_new_tokens to at most {context - 2} "
                                     f"(a prompt longer than the rest keeps its last tokens)")
                continue
            for req in task.requests[:limit] if limit else task.requests:
                for i, choice in enumerate(req.choices):
                    n = len(_choice_ids(tokenizer, req, choice, task.target_delimiter, chat))
                    if n == 0:
                        raise StageError(f"{where}: {req.where}: choice {i} ({choice!r}) is empty once tokenized "
                                         f"after the prompt; give it some text or remove the item")
                    if n > context:
                        raise StageError(f"{where}: {req.where}: choice {i} is {n} tokens, longer than the model's "
                                         f"context of {context} tokens; shorten the choice or remove the item")


def _loglikelihoods(model, tokenizer, reqs: list, delimiter: str, batch_size: int, device: str, desc, chat: bool):
    from tonsai.eval.generate import loglikelihood, loglikelihood_ids

    if not chat:
        pairs = [(r.prompt, delimiter + c) for r in reqs for c in r.choices]
        return loglikelihood(model, tokenizer, pairs, batch_size, device, progress=desc)
    pairs_ids = []
    for r in reqs:
        ctx = chat_prompt_ids(tokenizer, r.prompt)
        for c in r.choices:
            pairs_ids.append((ctx, tokenizer(c, add_special_tokens=False, split_special_tokens=True)["input_ids"]))
    return loglikelihood_ids(model, tokenizer, pairs_ids, batch_size, device, progress=desc)


def run_suites(model, tokenizer, suite_paths: Sequence[str | Path | Suite], device: str, batch_size: int = 8,
               limit: int | None = None, progress: bool = True, max_new_tokens: int | None = None,
               chat: bool = False) -> SuiteResults:
    """Run every task of every suite (paths, or suites :func:`load_suite` returned); returns
    :class:`SuiteResults`.

    ``SuiteResults`` is the dict ``{suite_name: {task_name: {metric: float, ..., "n": int}}}`` (write it
    into report.json as ``suites.<suite>.<task>.<metric>``) with ``.samples`` holding the prompt,
    prediction and reference of every item. ``limit`` takes the first items of each task;
    ``max_new_tokens`` caps every generate task's budget (quick smoke runs). The model is
    used as it is (put it on ``device`` in the dtype you want, e.g. bf16 on a GPU); all suites are
    loaded, and so validated, and checked against the model's context (:func:`check_fits`) before the
    first one runs."""
    if limit is not None and limit < 1:
        raise StageError(f"--limit must be at least 1, got {limit}")
    suites = [p if isinstance(p, Suite) else load_suite(p) for p in suite_paths]
    check_distinct_names(suites)
    check_fits(suites, tokenizer, context_length(model.config), limit, max_new_tokens, chat)
    results = SuiteResults()
    for suite in suites:
        results[suite.name], results.samples[suite.name] = {}, {}
        for task in suite.tasks:
            scores, samples = run_task(model, tokenizer, task, device, batch_size, limit, progress,
                                       label=f"{suite.name}/", max_new_tokens=max_new_tokens, chat=chat)
            results[suite.name][task.name] = scores
            results.samples[suite.name][task.name] = samples
            log.info("%s/%s: %s", suite.name, task.name,
                     ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()))
    return results
