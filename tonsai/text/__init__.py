"""Text in one canonical form: normalization, syllables, script analysis, quality, segmentation."""

from tonsai.text.normalize import NORMALIZER_VERSION, normalize
from tonsai.text.quality import QualitySignals, quality_signals
from tonsai.text.script import RoutingThresholds, ScriptCounts, count_scripts, route
from tonsai.text.segment import clusters, word_count, words
from tonsai.text.syllable import is_valid_syllable

__all__ = ["NORMALIZER_VERSION", "normalize", "count_scripts", "route", "RoutingThresholds", "ScriptCounts",
           "quality_signals", "QualitySignals", "clusters", "words", "word_count", "is_valid_syllable"]
