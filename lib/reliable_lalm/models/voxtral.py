"""Voxtral (Mistral AI) on the native backend, with its prompts built by mistral-common.

Everything but the following is :class:`~reliable_lalm.models.hf_generic.NativeHFBackend`'s
(batching, left-padded text, the audio-reached check, greedy and row-seeded K@N sampling, EOS
handling, LoRA targets of the language model):

* **Prompts.** Voxtral has no Jinja chat template: its tokenizer is mistral-common's Tekken
  (``MistralCommonBackend``) and ``VoxtralProcessor.apply_chat_template`` turns a conversation into
  a mistral-common chat request (``<s>[INST][BEGIN_AUDIO][AUDIO]...{text}[/INST]``).
  ``VoxtralProcessor.__call__`` has no audio argument at all, so the clips travel inside the
  conversation, one audio part per row, as a float32 WAV (bit-exact), and the processor returns the
  input ids and the features together.
* **Audio.** mistral-common pads every clip with silence to a multiple of 30 s and the feature
  extractor cuts it into 30 s chunks of 3000 mel frames (375 ``[AUDIO]`` tokens each): feature rows
  are chunks, not prompts, as Audio Flamingo 3's windows. There is no feature mask, so the right
  padding is checked on the features themselves: after a clip's end every frame must be the
  log-mel of silence. Clips are kept up to :data:`MAX_AUDIO_SECONDS`, not one 30 s window.

Needs the optional extra ``voxtral`` (``pip install 'reliable-lalm[voxtral]'``: mistral-common).
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any, Sequence

import numpy as np
import soundfile as sf

from reliable_lalm.models.base import AudioNotReachedError
from reliable_lalm.models.hf_generic import NativeHFBackend

# Mistral's model card: Voxtral understands up to 40 minutes of audio (its 32k-token context).
MAX_AUDIO_SECONDS = 40 * 60
# A clip shorter than one STFT window; rendering a prompt for display needs some audio.
_RENDERING_CLIP = np.zeros(400, dtype=np.float32)


def wav_base64(audio: np.ndarray, sampling_rate: int) -> str:
    """Mono float32 samples as a base64 float WAV: what mistral-common decodes back unchanged."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, dtype=np.float32), sampling_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def voxtral_conversation(prompt: str, audio_b64: str) -> list[dict[str, Any]]:
    """One user turn: the clip, then the prompt text (mistral-common encodes parts in this order)."""
    return [{"role": "user", "content": [{"type": "audio", "base64": audio_b64}, {"type": "text", "text": prompt}]}]


class VoxtralBackend(NativeHFBackend):
    """``VoxtralForConditionalGeneration`` with its ``VoxtralProcessor`` (mistral-common prompts)."""

    def __init__(self, model, processor, *, max_audio_seconds: float = MAX_AUDIO_SECONDS, **kwargs):
        super().__init__(model, processor, **kwargs)
        fe = processor.feature_extractor
        self.window_seconds = float(max_audio_seconds)
        self.window_samples = int(round(self.window_seconds * self.sampling_rate))
        self.chunk_samples = int(fe.n_samples)  # 30 s: each clip is padded to a multiple of it
        self.chunk_frames = int(fe.nb_max_frames)  # mel frames per chunk (3000)
        self.hop_length = int(fe.hop_length)
        self.n_fft = int(fe.n_fft)
        # Silence is one constant log-mel value only without dither (dither adds noise to it).
        self.check_padding = float(getattr(fe, "dither", 0.0) or 0.0) == 0.0
        self._prompt_of_text: dict[str, str] = {}
        # [AUDIO] tokens mistral-common gives one chunk (375 for the real 30 s chunk at 12.5 per second)
        self.audio_tokens_per_chunk = self._rendered_ids("?").count(self.audio_token_id)

    # ---------------------------------------------------------------- prompts

    def _rendered_ids(self, prompt: str) -> list[int]:
        """Token ids of ``prompt`` with a silent clip shorter than one chunk (one chunk of ``[AUDIO]``)."""
        audio = wav_base64(_RENDERING_CLIP, self.sampling_rate)
        return list(self.tokenizer.apply_chat_template(voxtral_conversation(prompt, audio), tokenize=True,
                                                       return_dict=False))

    def render_chat(self, prompt: str) -> str:
        """The prompt as mistral-common renders it, with the audio as one ``[AUDIO]`` (not expanded yet)."""
        ids = self._rendered_ids(prompt)
        collapsed = [t for i, t in enumerate(ids) if not (t == self.audio_token_id and i and ids[i - 1] == t)]
        text = self.tokenizer.decode(collapsed, skip_special_tokens=False)
        if len(self._prompt_of_text) > 4096:
            self._prompt_of_text.clear()
        self._prompt_of_text[text] = prompt
        return text

    def _prompt_of(self, text: str) -> str:
        """The prompt a rendered text came from (mistral-common never parses special tokens back)."""
        if text not in self._prompt_of_text:  # the two caches are cleared apart: rebuild from the prompt cache
            self._prompt_of_text = {t: p for p, t in self._chat_cache.items()}
        if text not in self._prompt_of_text:
            raise ValueError("Voxtral encodes texts rendered by chat_text() only (its tokenizer cannot read "
                             f"special tokens from text): {text[:80]!r}")
        return self._prompt_of_text[text]

    # ---------------------------------------------------------------- encoding

    def encode(self, texts: Sequence[str], audios: Sequence[np.ndarray]):
        """Processor output for a batch (``texts`` from :meth:`chat_text`); raises unless every clip's
        chunks, audio tokens and right-padded features are there."""
        conversations = [voxtral_conversation(self._prompt_of(text), wav_base64(audio, self.sampling_rate))
                         for text, audio in zip(texts, audios)]
        # Padding is asked for the text only (left, the tokenizer's side); the clips are padded to
        # 30 s chunks by mistral-common, never to the longest clip.
        enc = self.processor.apply_chat_template(conversations, return_tensors="pt",
                                                 processor_kwargs={"text_kwargs": {"padding": True}})
        if "input_features" not in enc:
            raise AudioNotReachedError(f"{type(self.processor).__name__} returned no input_features: "
                                       "the audio was not processed")
        chunks = [max(1, math.ceil(len(audio) / self.chunk_samples)) for audio in audios]
        if enc["input_features"].shape[0] != sum(chunks):
            raise AudioNotReachedError(f"{enc['input_features'].shape[0]} feature chunks for clips of "
                                       f"{sum(chunks)} chunks of {self.chunk_samples} samples")
        per_row = (enc["input_ids"] == self.audio_token_id).sum(-1)
        if per_row.tolist() != [c * self.audio_tokens_per_chunk for c in chunks]:
            raise AudioNotReachedError(f"audio tokens per prompt {per_row.tolist()} do not follow the clips' "
                                       f"chunks {chunks} (chat request without audio?)")
        if self.check_padding:
            self._assert_right_padded(enc["input_features"], [len(a) for a in audios], chunks)
        return enc

    def _assert_right_padded(self, features, lengths: Sequence[int], chunks: Sequence[int]) -> None:
        """After each clip's last sample, every mel frame is the clip's silence value (audio first)."""
        start = 0
        for length, n in zip(lengths, chunks):
            clip = features[start:start + n].transpose(0, 1).reshape(features.shape[1], -1)  # (mel, frames)
            start += n
            # The first frame whose centred STFT window lies wholly after the clip's last sample.
            silent_from = math.ceil((length + self.n_fft // 2) / self.hop_length)
            tail = clip[:, silent_from:]
            if tail.numel() and bool((tail != tail[0, 0]).any()):
                raise AudioNotReachedError(f"audio features are not right-padded: a clip of {length} samples has "
                                           f"non-silent frames after frame {silent_from}")

    def audio_frames(self, enc) -> int:
        """Every mel frame of every chunk the prompts hold reaches the encoder (Voxtral masks none)."""
        chunks = int((enc["input_ids"] == self.audio_token_id).sum()) // self.audio_tokens_per_chunk
        return chunks * self.chunk_frames
