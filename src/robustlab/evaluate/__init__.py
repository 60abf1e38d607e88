"""Robustness evaluation: clean accuracy, accuracy under each attack of a suite, per-sample worst case.

A suite is an ordered list of attack specs. Each attack runs on every clean-correct test point
(points the model already gets wrong count as wrong under every attack), so each column is that
attack's own accuracy; the worst case is the share of points that no attack of the suite breaks.

Suite `paper` is the AALP Table 2 protocol: FGSM, PGD-10/20/40/100, CW-10/20/40/100 at the run's
threat model, iterative step size `eval.step` (default eps × `eval.step_ratio` = eps/4). Suite
`autoattack` is one attack, AutoAttack `standard` (its components run in cascade inside it); the
robust accuracy after each component is in `EvalResult.stages`.

Sanity flags (`evaluate.sanity`) are computed at the end when `flags` is given. With `state_path`
the evaluation is resumable: progress is written after every batch of every attack, and a second
call with the same settings continues where the first stopped, with the same result.

Modules: `registry` (the suite registry), `suites` (the built-in suites, attack labels), `run` (the
evaluation in named stages), `result` (EvalResult and its tables), `state` (the resume state),
`sanity` (the flags), `outside` (`evaluate_model`: any nn.Module on arrays).
"""

from .outside import evaluate_model, output_classes
from .registry import SUITES
from .result import EvalResult, flag_lines, markdown_table, print_table, stages_lines
from .run import check_outputs, evaluate
from .state import EvalState, fingerprint
from .suites import attack_label, resolve_suite

__all__ = [
    "SUITES",
    "EvalResult",
    "EvalState",
    "attack_label",
    "check_outputs",
    "evaluate",
    "evaluate_model",
    "fingerprint",
    "flag_lines",
    "markdown_table",
    "output_classes",
    "print_table",
    "resolve_suite",
    "stages_lines",
]
