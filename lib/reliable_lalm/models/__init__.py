"""Audio language models behind one backend protocol, and the model registry.

A model is one module plus one registry entry (:mod:`.registry`): the module implements
:class:`~reliable_lalm.models.base.Backend` (batched generation for (audio, prompt) pairs, K@N
from one prefill where it can, per-option log-probabilities where it can) and, for training,
:class:`~reliable_lalm.models.base.TrainingAdapter` (chat/SFT collation, LoRA targets, merge).
"""
