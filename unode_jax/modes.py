"""What each --mode does, as data: whether it trains, which evaluators it runs.

  train       train (or resume) every model of the plan; no scoring
  train_eval  train, then score the test set (one-class: Tables 1, 4-6; multi-class: 3)
  all         train_eval, then the corrupted test sets (Table 2; one-class)
  eval        score the test set with the trained models (e.g. other score.* settings)
  corrupted   score the corrupted test sets with the trained models (Table 2)
  predict     score new images (--images) with one trained model -> predictions.csv
  export      one trained model as a folder (--out) that jax and numpy alone score
  ablate      a train_eval run per variant of the paper's ablations (ablation.py)
  report      rebuild the reports from the saved scores (no config, data or model)

'test' is the one-class or the multi-class evaluator, as data.setting says.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Mode:
    train: bool = False  # Train (or resume) each model of the plan first.
    evals: tuple = ()  # Evaluators (evaluation/evaluators.py) run on each trained model, in order.
    needs_test: bool = False  # Stops at once if the dataset has no test images.
    one_class_only: bool = False  # Defined for data.setting='one_class' only.
    needs_config: bool = True
    # Uses the devices: every process of a multi-host run takes part. Without, process 0
    # alone does the work (files only) and the others exit at once.
    devices: bool = True


MODES = {
    'train': Mode(train=True),
    'train_eval': Mode(train=True, evals=('test',)),
    'all': Mode(train=True, evals=('test', 'corrupted'), needs_test=True, one_class_only=True),
    'eval': Mode(evals=('test',), needs_test=True),
    'corrupted': Mode(evals=('corrupted',), needs_test=True, one_class_only=True),
    'predict': Mode(evals=('predict',)),
    'export': Mode(),
    'ablate': Mode(train=True, evals=('test',), one_class_only=True),
    'report': Mode(needs_config=False, devices=False),
}
