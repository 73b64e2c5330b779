"""The spectrogram front end: waveform -> log-mel image, as an nn.Module so it runs on the GPU and lives in the ONNX graph.

The STFT is a strided conv1d with a windowed DFT basis (real and imaginary parts as separate
kernels) instead of torch.stft: it computes the same power spectrum as torchaudio's
MelSpectrogram (center=True, reflect padding, periodic Hann window), but has no complex tensors,
so the ONNX exporter accepts it with a dynamic clip length (`inference_chunk_method: varying`).
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import Tensor, nn
from torch.nn import functional as F

from deuterium.data_types.audio.settings import AudioSettings


def dft_basis(n_fft: int) -> Tensor:
    """[2 * (n_fft // 2 + 1), 1, n_fft]: Hann-windowed cosines then sines, one row per frequency bin."""
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64).unsqueeze(1)
    angle = 2 * math.pi * k * n / n_fft
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
    return basis.unsqueeze(1).float()


class LogMel(nn.Module):
    def __init__(self, audio: AudioSettings, masks: nn.Module | None = None):
        """`masks`: SpecAugment masking (augment.SpecMasks), applied only while the model trains."""
        super().__init__()
        self.masks = masks
        self.n_fft, self.hop = audio.stft_window_size, audio.hop_size
        fbank = torchaudio.functional.melscale_fbanks(
            self.n_fft // 2 + 1,
            f_min=audio.min_frequency,
            f_max=audio.max_frequency if audio.max_frequency is not None else audio.sample_rate / 2,
            n_mels=audio.mel_frequency_bins,
            sample_rate=audio.sample_rate,
        )
        # Derived from the settings, so not saved with the weights.
        self.register_buffer("basis", dft_basis(self.n_fft), persistent=False)
        self.register_buffer("fbank", fbank.T.contiguous(), persistent=False)  # [mels, bins]
        self.normalize = audio.spectrogram_normalization

    def power(self, wave: Tensor) -> Tensor:
        """[..., samples] -> power spectrum [..., bins, frames] (torchaudio's Spectrogram(power=2))."""
        lead = wave.shape[:-1]
        flat = wave.reshape(-1, 1, wave.shape[-1])
        flat = F.pad(flat, (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        parts = F.conv1d(flat, self.basis, stride=self.hop)  # [n, 2 * bins, frames]
        real, imag = parts.chunk(2, dim=1)
        spec = real.square() + imag.square()
        return spec.reshape(*lead, spec.shape[-2], spec.shape[-1])

    def forward(self, wave: Tensor) -> Tensor:
        """[batch, samples] or [batch, channels, samples] -> [batch, channels, mels, frames]."""
        if wave.dim() == 2:
            wave = wave.unsqueeze(1)
        mel = torch.matmul(self.fbank, self.power(wave))
        spec = torch.log(mel + 1e-6)
        if self.normalize == "frequency":
            spec = spec - spec.mean(dim=3, keepdim=True)  # each channel's mel bin over time
            spec = spec / (spec.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        elif self.normalize == "image":
            mean = spec.mean(dim=(1, 2, 3), keepdim=True)
            std = spec.std(dim=(1, 2, 3), keepdim=True)
            spec = (spec - mean) / (std + 1e-5)
        if self.masks is not None and self.training:
            spec = self.masks(spec)
        return spec

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models saved before the conv1d STFT carried torchaudio's window and filterbank buffers.
        for key in [k for k in state_dict if k.startswith(prefix + "mel.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
