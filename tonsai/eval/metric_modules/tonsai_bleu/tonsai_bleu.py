"""BLEU (sacrebleu corpus score, 0-100) as an `evaluate` metric that loads offline by path; ``lang="km"``
scores over khmer-nltk words (Khmer writes no spaces), other languages use sacrebleu's 13a tokenizer:

    evaluate.load("<tonsai>/eval/metric_modules/tonsai_bleu").compute(predictions=[...], references=[...], lang="km")

Same numbers as :func:`tonsai.eval.metrics.bleu` (it calls it)."""

import evaluate

from tonsai.eval import metrics


class TonsaiBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="Papineni et al. 2002; Post 2018 (sacrebleu)", inputs_description=__doc__,
            features=metrics.evaluate_features())

    def _compute(self, predictions, references, lang: str = "en"):
        return {"bleu": metrics.bleu(predictions, references, lang=lang)}
