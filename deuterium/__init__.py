"""deuterium: params.yaml -> dvc repro -> ONNX -> BentoML, for audio and image (later tabular and text) problems."""

__version__ = "0.1.0"
