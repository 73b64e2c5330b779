"""deuterium: params.yaml -> dvc repro -> ONNX -> BentoML, for audio (and later tabular, image, text) problems."""

__version__ = "0.1.0"
