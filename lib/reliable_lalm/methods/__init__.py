"""Prompting methods (baseline, IDK, MCoT, the 3-step task agent, K@N sampling) and how they run.

Methods are registered by name in :mod:`.registry` (a :class:`~.registry.MethodEntry` each: prompt
builder, runner, few-shot, default tokens); :mod:`.execution` runs one over a benchmark's items
into a result store on the batched, resumable engine of :mod:`.generation`; the task agent's
multi-step runner is :mod:`.agent`.
"""
