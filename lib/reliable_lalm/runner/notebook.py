"""The one call every notebook makes after its parameters cell.

    output, exp, compare = start_notebook("01_baselines", globals())

checks the parameters (and applies ``-p profile NAME``) before any work, chooses the output folder
(``output.tag``: ``tables/<profile>/`` only for the profile's own parameters, see
:mod:`reliable_lalm.runner.outputs`), builds the :class:`~reliable_lalm.experiments.Experiment` of
the shared parameters and shows the benchmark's summary.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from IPython.display import display

from reliable_lalm import experiments
from reliable_lalm.experiments import Experiment
from reliable_lalm.runner.outputs import OutputLocation, notebook_setup
from reliable_lalm.runner.schema import BaseParameters


def experiment_from_parameters(params: Mapping[str, Any]) -> Experiment:
    """The Experiment of a notebook's parameters: the shared parameters (``BaseParameters``) are
    Experiment's fields of the same names."""
    return Experiment(**{name: params[name] for name in BaseParameters.model_fields})


class NotebookStart(NamedTuple):
    output: OutputLocation  # where this execution writes (``output.tag`` for save_table/save_figure)
    exp: Experiment
    compare: bool  # on MMAU, tables are shown beside the paper's numbers


def start_notebook(stem: str, namespace: dict[str, Any]) -> NotebookStart:
    """Check the notebook's parameters in ``namespace`` (its globals), then set up the experiment."""
    output = notebook_setup(stem, namespace)
    exp = experiment_from_parameters(namespace)
    display(exp.loaded_benchmark.summary())
    return NotebookStart(output, exp, experiments.paper_comparable(namespace["benchmark"]))
