"""chrF / chrF++ (sacrebleu corpus scores, 0-100) as an `evaluate` metric that loads offline by path:

    evaluate.load("<tonsai>/eval/metric_modules/tonsai_chrf").compute(
        predictions=[...], references=[...] or [[...], ...], word_order=2)

Same numbers as :func:`tonsai.eval.metrics.chrf` (it calls it)."""

import evaluate

from tonsai.eval import metrics


class TonsaiChrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="Popovic 2015 (chrF), 2017 (chrF++)", inputs_description=__doc__,
            features=metrics.evaluate_features())

    def _compute(self, predictions, references, word_order: int = 0):
        return {"score": metrics.chrf(predictions, references, word_order=word_order), "word_order": word_order}
