"""The embedded default: the synthetic three-modality benchmark (:mod:`.synthetic`), the tiny demo
model of the real Qwen2-Audio class (:mod:`.model`), its training recipe (:mod:`.train`) and
its card (:mod:`.card`); ``rlalm demo`` is :mod:`reliable_lalm.cli.demo`.

Product code never imports this package: the demo model and benchmark reach the rest of the
library only through the model and benchmark registries (entries declared in ``pyproject.toml``).
"""
