"""Audio augmentations, training only (the ONNX graph has none of them).

- waveform, per clip, on the batch on the training device: random time shift, gain and additive
  coloured noise at a signal-to-noise range, and pitch shift (torch-audiomentations);
- speed perturbation, per clip in the Dataset before the crop (the clip gets shorter or longer, so it
  cannot run on a fixed-size batch): the cached waveform resampled by the speed factor with soxr, as
  Kaldi's speed perturbation does (tempo and pitch change together);
- SpecAugment time and frequency masking on the log-mel spectrogram (torchaudio's masking transforms),
  inside the front end while the model trains: `LogMel` applies `SpecMasks` only in training mode, and
  export traces the model in eval mode.
"""

from __future__ import annotations

import numpy as np
import soxr
import torch
import torchaudio
from torch import Tensor, nn

from deuterium.data_types.audio.settings import AudioAugmentation
from deuterium.errors import ConfigError


class WaveAugment(nn.Module):
    """[batch, samples] or [batch, channels, samples] -> the same shape, each clip augmented on its own."""

    def __init__(self, aug: AudioAugmentation, sample_rate: int):
        super().__init__()
        import torch_audiomentations as ta

        common = {"mode": "per_example", "sample_rate": sample_rate, "output_type": "dict"}
        parts = []
        if aug.time_shift_probability > 0:
            parts.append(
                ta.Shift(
                    min_shift=-aug.time_shift_max,
                    max_shift=aug.time_shift_max,
                    shift_unit="fraction",
                    rollover=False,  # silence comes in, the clip's end does not wrap to its start
                    p=aug.time_shift_probability,
                    **common,
                )
            )
        if aug.gain_probability > 0:
            parts.append(
                ta.Gain(
                    min_gain_in_db=aug.gain_min_db,
                    max_gain_in_db=aug.gain_max_db,
                    p=aug.gain_probability,
                    **common,
                )
            )
        if aug.pitch_probability > 0:
            try:
                parts.append(
                    ta.PitchShift(
                        min_transpose_semitones=aug.pitch_min_semitones,
                        max_transpose_semitones=aug.pitch_max_semitones,
                        p=aug.pitch_probability,
                        **common,
                    )
                )
            except ValueError:  # it shifts only by ratios that resample fast at this rate
                raise ConfigError(
                    f"augmentation.pitch_min_semitones..pitch_max_semitones ({aug.pitch_min_semitones:g}.."
                    f"{aug.pitch_max_semitones:g}): torch-audiomentations has no fast pitch-shift ratio in that "
                    f"range at sample rate {sample_rate}; widen it (e.g. -4..4) or set pitch_probability: 0"
                ) from None
        if aug.noise_probability > 0:
            parts.append(
                ta.AddColoredNoise(
                    min_snr_in_db=aug.noise_min_snr_db,
                    max_snr_in_db=aug.noise_max_snr_db,
                    min_f_decay=aug.noise_min_f_decay,
                    max_f_decay=aug.noise_max_f_decay,
                    p=aug.noise_probability,
                    **common,
                )
            )
        self.parts = nn.ModuleList(parts)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.parts)

    @torch.no_grad()
    def forward(self, wave: Tensor) -> Tensor:
        mono = wave.dim() == 2
        x = wave.unsqueeze(1) if mono else wave
        for part in self.parts:
            x = part(x, sample_rate=self.sample_rate).samples
        return x.squeeze(1) if mono else x


def wave_augmenter(aug: AudioAugmentation, sample_rate: int) -> WaveAugment | None:
    augment = WaveAugment(aug, sample_rate)
    return augment if len(augment) else None


def speed(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """The clip played `factor` times as fast (shorter for factor > 1), by resampling it with soxr."""
    if factor == 1.0:
        return wave
    out_rate = sample_rate / factor
    x = wave.T if wave.ndim == 2 else wave  # soxr takes [frames, channels]
    y = soxr.resample(x, sample_rate, out_rate, quality="MQ")
    return np.ascontiguousarray(y.T if wave.ndim == 2 else y, dtype=np.float32)


class SpecMasks(nn.Module):
    """SpecAugment (Park et al. 2019) masking: `frequency_masks` bands of up to `max_bins` mel bins and
    `time_masks` spans of up to `max_frames` frames set to zero, drawn for each clip (iid_masks). Zero is
    the mean of a normalized spectrogram. Identity outside training."""

    def __init__(self, frequency_masks: int, max_bins: int, time_masks: int, max_frames: int):
        super().__init__()
        freq = [
            torchaudio.transforms.FrequencyMasking(max_bins, iid_masks=True) for _ in range(frequency_masks)
        ]
        time = [torchaudio.transforms.TimeMasking(max_frames, iid_masks=True) for _ in range(time_masks)]
        self.masks = nn.ModuleList(freq + time)

    def forward(self, spec: Tensor) -> Tensor:
        """[batch, channels, mels, frames] -> the same, masked."""
        if not self.training:
            return spec
        for mask in self.masks:
            spec = mask(spec)
        return spec


def spec_masks(aug: AudioAugmentation, sample_rate: int, hop: int, mels: int) -> SpecMasks | None:
    frames = round(aug.time_mask_max_seconds * sample_rate / hop)
    bins = min(aug.frequency_mask_max_bins, mels)
    time_masks = aug.time_masks if frames > 0 else 0
    freq_masks = aug.frequency_masks if bins > 0 else 0
    if not time_masks and not freq_masks:
        return None
    return SpecMasks(freq_masks, bins, time_masks, frames)
