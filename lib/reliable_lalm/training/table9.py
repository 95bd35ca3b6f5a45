"""The paper's Table 9 (LoRA SFT hyper-parameters per training modality) and the readings of its
ambiguous cells, each under a name a profile or a command can choose.

Table 9 has one column per training modality (Sound, Music, Speech). Learning rate (3e-5), rank (8)
and target modules ({k_proj, q_proj, v_proj}) are one value across the three; the alpha row prints
two values, 32 and 16, so one of them spans two columns, and the text of the paper does not say
which. The two readings (Sound-Music-Speech order, as the columns):

* ``"32-32-16"``: the 32 spans Sound and Music (sound 32, music 32, speech 16);
* ``"32-16-16"``: the 16 spans Music and Speech (sound 32, music 16, speech 16).

Both agree on sound (32) and speech (16, also the modality of the paper's alpha study); they differ
on music only. Which modules the names {k_proj, q_proj, v_proj} select is the ``lora_targets``
setting (:data:`reliable_lalm.models.families.LORA_TARGETS`). The evidence for each reading, and
the paper profile's choice, are in ``docs/paper_settings.md``. No torch here: the profiles validate
these names before anything runs.
"""
from __future__ import annotations

LEARNING_RATE = 3e-5
LORA_RANK = 8
EPOCHS = 1  # section 5.1: "for 1 epoch"

ALPHA_READINGS: dict[str, dict[str, float]] = {
    "32-32-16": {"sound": 32.0, "music": 32.0, "speech": 16.0},  # the 32 spans Sound and Music
    "32-16-16": {"sound": 32.0, "music": 16.0, "speech": 16.0},  # the 16 spans Music and Speech
}
# The reading the notebooks (and the demo's shipped adapters) default to; the paper profile names its own.
DEFAULT_ALPHA_READING = "32-32-16"
MODALITIES = tuple(ALPHA_READINGS[DEFAULT_ALPHA_READING])


def table9_alpha(modality: str, reading: str = DEFAULT_ALPHA_READING) -> float:
    """LoRA alpha of ``modality`` under a named reading of Table 9's alpha row."""
    if reading not in ALPHA_READINGS:
        raise ValueError(f"lora_alpha_reading must be one of {', '.join(ALPHA_READINGS)}, not {reading!r}")
    alphas = ALPHA_READINGS[reading]
    if modality not in alphas:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(alphas)}")
    return alphas[modality]
