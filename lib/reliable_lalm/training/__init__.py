"""Training: the model-specific K@N IDK dataset (:mod:`.idk_dataset`), SFT examples (:mod:`.sft_data`),
and LoRA SFT with peft, single process or DeepSpeed ZeRO-2 (:mod:`.lora_sft`), by concern: its
configuration (:mod:`.lora_config`), the model with LoRA and the answer loss (:mod:`.lora_model`),
the process group and DeepSpeed config (:mod:`.distributed`), adapter checks (:mod:`.adapter_check`),
merging (:mod:`.merge`) and the step benchmark (:mod:`.sft_benchmark`); the shared loop (:mod:`.loop`)."""
