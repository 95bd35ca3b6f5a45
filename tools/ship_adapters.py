"""Copy the demo profile's trained LoRA adapters into the package (lib/reliable_lalm/assets/demo_adapters/).

Run after `rlalm reproduce --profile demo` has trained them (they are in cache/results/demo/...):

    python tools/ship_adapters.py [--profile demo]

For every adapter the profile's notebooks train (04_sft per modality, the alpha sweep of 07) it
finds the cached adapter of exactly that configuration, computes its portable training key
(reliable_lalm.experiments.shipped.training_key) and writes the files and a manifest entry
(training parameters, the K@N store it came from, the machine it was trained on). `make reproduce`
then evaluates these instead of retraining. Re-run it (and regenerate the demo outputs) whenever
the demo model, the K@N settings or the SFT recipe change.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from reliable_lalm.core.numerics import cpu_description  # noqa: E402
from reliable_lalm.experiments import shipped  # noqa: E402
from reliable_lalm.experiments.crossmodal import store_identity  # noqa: E402
from reliable_lalm.runner.retrain import crossmodal_from_parameters, planned_trainings  # noqa: E402
from reliable_lalm.training.adapter_check import verify_adapter  # noqa: E402
from reliable_lalm.training.lora_sft import read_summary  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    args = parser.parse_args()
    for params, task, alpha in planned_trainings(args.profile, alpha_sweep=True):
        cm = crossmodal_from_parameters(params, use_shipped=False)
        source = cm.adapter_dir(task, alpha)
        summary = read_summary(source)
        if not (summary and summary.get("complete")):
            print(f"{source}: not trained; run `rlalm reproduce --profile {args.profile}` first", file=sys.stderr)
            return 1
        verify_adapter(source)
        config = cm.sft_config(task, alpha)
        name = f"{task}-a{config.alpha:g}"
        key = cm.training_key(task, alpha)
        info = {"train_task": task, "alpha": config.alpha, "sft": config.training_fingerprint(),
                "k": cm.config.k, "n": cm.config.n, "train_prompt": cm.config.train_prompt,
                "knn_store": store_identity(cm.config.k_at_n_store),  # manifest keys as the shipped manifest writes them
                "knn_sampling": {"samples": params["k_at_n_samples"], "temperature": params["k_at_n_temperature"],
                                 "top_p": params["k_at_n_top_p"]},
                "base_model_sha256": shipped.model_content_digest(cm.config.base_model),
                "idk_dataset": (summary.get("data") or {}).get("idk_dataset"),
                "trained_on": cpu_description(), "profile": args.profile}
        target = shipped.ship_adapter(source, name, key=key, info=info)
        print(f"{name}: {source.name} -> {target.relative_to(ROOT)} (training key {key})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
