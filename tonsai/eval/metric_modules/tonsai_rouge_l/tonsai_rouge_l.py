"""ROUGE-L F-measure (mean over examples, 0-1) over words as an `evaluate` metric that loads offline by
path. Khmer is segmented with khmer-nltk (rouge-score's default tokenizer would drop it):

    evaluate.load("<tonsai>/eval/metric_modules/tonsai_rouge_l").compute(predictions=[...], references=[...], lang="km")

Same numbers as :func:`tonsai.eval.metrics.rouge_l` (it calls it)."""

import evaluate

from tonsai.eval import metrics


class TonsaiRougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="Lin 2004 (ROUGE)", inputs_description=__doc__,
            features=metrics.evaluate_features())

    def _compute(self, predictions, references, lang: str = "km"):
        return {"rouge_l": metrics.rouge_l(predictions, references, lang=lang)}
