"""SQuAD-style exact match and F1 (0-1) as an `evaluate` metric that loads offline by path; F1 over
Khmer words from khmer-nltk, Khmer punctuation removed like English punctuation:

    evaluate.load("<tonsai>/eval/metric_modules/tonsai_qa").compute(predictions=[...], references=[[...], ...], lang="km")

Same numbers as :func:`tonsai.eval.metrics.exact_match` and :func:`tonsai.eval.metrics.f1`."""

import evaluate

from tonsai.eval import metrics


class TonsaiQa(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="Rajpurkar et al. 2016 (SQuAD)", inputs_description=__doc__,
            features=metrics.evaluate_features())

    def _compute(self, predictions, references, lang: str = "km"):
        return {"exact_match": metrics.exact_match(predictions, references),
                "f1": metrics.f1(predictions, references, lang=lang)}
