"""No tests here any more: the training tests are one file per module of tonsai/train (test_run.py,
test_launch.py, test_resume.py, ...), their helpers in runs.py and their fixtures in conftest.py.
This file only keeps the names that tests/publish/test_push.py and tests/sft/test_sft_run.py import
from it; delete it once they import from tests.train.runs."""

from tests.train.runs import LAUNCH_VARS, common_args, config  # noqa: F401
from tests.train.runs import wait_and_kill as _wait_and_kill  # noqa: F401
