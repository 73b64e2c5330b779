import json

import numpy as np
import onnx
import pandas as pd

from deuterium import scoring
from deuterium.data_types.audio import io as audio_io


def test_one_onnx_graph_that_matches_pytorch_on_real_clips(pipeline):
    parity = json.loads((pipeline.export / "parity.json").read_text())
    assert parity["clips"] > 0
    assert parity["max_abs_diff"] <= parity["tolerance"] <= 1e-4
    model = onnx.load(str(pipeline.export / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["waveform"]


def test_onnx_scores_agree_with_the_evaluate_stage(pipeline):
    """The scorer (onnxruntime, no torch) and evaluate (PyTorch) give the same test predictions."""
    scorer = scoring.Scorer(pipeline.export)
    preds = pd.read_parquet(pipeline.evaluate / "test_predictions.parquet")
    waves = [
        audio_io.load(pipeline.root / "data/fsdd/recordings" / f, scorer.pre.input["sample_rate"])
        for f in preds.file
    ]
    onnx_probs = scorer.raw(waves)
    torch_probs = preds.filter(like="prob_").to_numpy()
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
    assert [r["label"] for r in scorer.predict(waves)] == list(preds.predicted_label)
