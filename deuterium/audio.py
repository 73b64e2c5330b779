"""The spectrogram front end: waveform -> log-mel image, as an nn.Module so it runs on the GPU and lives in the ONNX graph."""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from deuterium.settings import AudioSettings


class LogMel(nn.Module):
    def __init__(self, audio: AudioSettings):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=audio.sample_rate,
            n_fft=audio.stft_window_size,
            hop_length=audio.hop_size,
            f_min=audio.min_frequency,
            f_max=audio.max_frequency,
            n_mels=audio.mel_frequency_bins,
            power=2.0,
        )
        self.normalize = audio.spectrogram_normalization == "image"

    def forward(self, wave: Tensor) -> Tensor:
        """[batch, samples] -> [batch, 1, mels, frames]."""
        spec = torch.log(self.mel(wave) + 1e-6).unsqueeze(1)
        if self.normalize:
            mean = spec.mean(dim=(1, 2, 3), keepdim=True)
            std = spec.std(dim=(1, 2, 3), keepdim=True)
            spec = (spec - mean) / (std + 1e-5)
        return spec
