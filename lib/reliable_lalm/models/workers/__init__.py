"""Worker scripts for :class:`reliable_lalm.models.worker.WorkerBackend` (see ``docs/workers.md``).

Each script runs in the model's own Python environment and is configured by environment variables
only. ``jsonl_worker.py`` is the worker side of the protocol (stdlib only, Python >= 3.8), imported
by the scripts from this folder, so a worker environment needs neither this package nor our
dependencies. ``demo_worker.py`` serves the embedded demo model (our environment; it tests the
protocol); ``qwen_audio_chat_worker.py`` and ``salmonn_worker.py`` serve the paper's Table 3 models
with the pinned ``requirements-*.txt`` beside them.
"""
