"""The paper's experiments as cached library calls: :class:`Experiment` (one model on one benchmark
under one profile) and the cross-modal / LoRA-alpha protocol (:mod:`.crossmodal`). The notebooks
use it as ``from reliable_lalm import experiments``."""
from reliable_lalm.experiments.experiment import (Experiment, adapter_summary, ci_table,
                                                  cross_validated, frame, lora_scores, model_label,
                                                  paper_comparable, table3_scores)

__all__ = ["Experiment", "adapter_summary", "ci_table", "cross_validated", "frame",
           "lora_scores", "model_label", "paper_comparable", "table3_scores"]
