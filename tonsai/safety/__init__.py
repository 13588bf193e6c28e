"""The safety check before release (scripts/safety_check.py) and the toxic-lexicon prepare filter.

- :mod:`tonsai.safety.lexicon`: the Khmer and English term lists the project maintains
  (eval_suites/safety/lexicon_*.yaml), validated on load and matched on normalized text.
- :mod:`tonsai.safety.classifier`: an optional Hugging Face sequence classifier named by the user.
- :mod:`tonsai.safety.prompts`: the prompt set (JSON lines: id, lang, category, prompt) and
  generations read back from a file.
- :mod:`tonsai.safety.generate`: generations of the model under test, plain or through its chat template.
- :mod:`tonsai.safety.report`: flagged rates per language and category, pass/fail, report.json/md/html.
- :mod:`tonsai.safety.run`: the stage (config, output folder, manifest, exit codes).
"""

CATEGORIES = ("harassment", "hate", "violence", "sexual", "self_harm", "illicit")
