"""Text in one canonical form: normalization, script analysis and routing."""

from tonsai.text.normalize import NORMALIZER_VERSION, normalize
from tonsai.text.script import RoutingThresholds, ScriptCounts, count_scripts, route

__all__ = ["NORMALIZER_VERSION", "normalize", "count_scripts", "route", "RoutingThresholds", "ScriptCounts"]
