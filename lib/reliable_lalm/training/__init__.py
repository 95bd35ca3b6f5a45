"""Training: the model-specific K@N IDK dataset (:mod:`.idk_dataset`), SFT examples and collation
(:mod:`.sft_data`), and LoRA SFT with peft, single process or DeepSpeed ZeRO-2 (:mod:`.lora_sft`)."""
