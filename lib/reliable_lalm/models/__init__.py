"""Audio language models behind one backend protocol, the family table and the model registry.

A served transformers family is one row of :data:`.families.FAMILIES` (its backend, classes,
processor quirks, extras, language-model prefix, tiny builder and training adapter); the registry
(:mod:`.registry`) derives the backend of a checkpoint from it. A backend implements
:class:`~reliable_lalm.models.base.Backend` (batched generation for (audio, prompt) pairs, K@N
through :mod:`.sampling`, per-option log-probabilities where it can); its family's
:class:`~reliable_lalm.models.training_adapter.TrainingAdapter` sits beside it (SFT collation,
answer loss, LoRA targets). This package imports only :mod:`reliable_lalm.core` and
:mod:`reliable_lalm.paths`.
"""
