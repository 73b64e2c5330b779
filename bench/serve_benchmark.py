"""How fast one model scores on this machine, by every path a client can take.

    python -m bench.serve_benchmark [--model-dir artifacts/export] [--params params.yaml] [--out bench.json]

1. PyTorch eager vs onnxruntime, both on the CPU: the fold models of params.yaml's architecture
   (random weights: speed does not depend on them), exported in this run, on the same chunks.
2. The real service vs a bare onnxruntime call: `bentoml serve` (production mode, on 127.0.0.1) driven
   by a separate load process at concurrency 1 and 32 with WAV uploads to /predict, against
   `Scorer.load` + `Scorer.predict` on the same files in this process. The model is --model-dir when it
   holds model.onnx (the export stage's), else the export of step 1.

Targets: the service's p50 at concurrency 1 within 2x the bare call's plus 5 ms; onnxruntime at
least 1.5x faster than PyTorch eager. The machine may be shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from serving import launch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIPS = 32  # distinct recordings sent round-robin
TORCH_BATCHES = (1, 32)  # chunks per call in the PyTorch vs onnxruntime comparison
SERVICE_LOADS = {1: (200, 30.0), 32: (640, 60.0)}  # concurrency: (most requests, most seconds)
QUICK_LOADS = {1: (20, 15.0), 32: (64, 30.0)}  # --quick: a smoke run, figures too rough to quote
WARMUP = 24  # requests before each measured run: BentoML's batching dispatcher calibrates on its first ones

log = logging.getLogger("bench")


def stats(seconds: list[float], wall: float | None = None) -> dict:
    ms = np.asarray(seconds) * 1000
    out = {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }
    out["per_second"] = len(ms) / wall if wall else 1000 / out["mean_ms"]
    return out


def time_calls(fn: Callable[[], object], runs: int, max_seconds: float, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# --- the model -----------------------------------------------------------------------------------------


def clip_files(exp, n: int = CLIPS) -> list[Path]:
    """Real recordings from the experiment's test (else training) dataframe."""
    from deuterium import io, problems

    frame_path = exp.dataset.test_dataframe or exp.dataset.train_dataframe
    folder = exp.dataset.test_data_folder if exp.dataset.test_dataframe else exp.dataset.data_folder
    frame = io.read_frame(frame_path).head(n)
    return [Path(folder) / name for name in frame[problems.of(exp).data.column(exp)]]


def build(params: Path, out_dir: Path, files: list[Path]):
    """params.yaml's fold models with random weights, exported like the export stage does."""
    import torch

    from deuterium import config, export, io, paths, problems

    exp = config.load(params)
    problem = problems.of(exp)
    info_file = paths.SPLIT / paths.DATA_INFO_FILE
    info = (
        io.read_json(info_file)
        if info_file.is_file()
        else problem.label_info(io.read_frame(exp.dataset.train_dataframe), exp)
    )
    torch.manual_seed(0)
    models = [problem.model(exp, problem.n_outputs(info)).eval() for _ in exp.dataset.folds]
    export.export(exp, problem, info, models, files[:8], out_dir)
    return exp, export.ScoringModule(models, problem).eval()


def torch_vs_onnx(module, model_dir: Path, chunks: np.ndarray, runs: int = 30) -> dict:
    import torch

    from deuterium import scoring

    session = scoring.session(model_dir / "model.onnx", ["CPUExecutionProvider"])
    rows = {}
    for batch in TORCH_BATCHES:
        x = np.resize(chunks, (batch, *chunks.shape[1:])).astype(np.float32)
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            eager = time_calls(lambda tx=tx: module(tx), runs=runs, max_seconds=20)
        ort = time_calls(
            lambda x=x: session.run([scoring.OUTPUT_NAME], {session.get_inputs()[0].name: x}),
            runs=runs,
            max_seconds=20,
        )
        e, o = stats(eager), stats(ort)
        rows[str(batch)] = {"torch_eager": e, "onnxruntime": o, "speedup_p50": e["p50_ms"] / o["p50_ms"]}
    return {
        "torch_threads": torch.get_num_threads(),
        "onnxruntime_intra_op_threads": "default (one per physical core)",
        "batches": rows,
    }


# --- the service ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


@contextmanager
def service(model_dir: Path, work: Path) -> Iterator[str]:
    """`bentoml serve` of serving/service.py with this model, in a throwaway BENTOML_HOME; yields its URL."""
    home = work / "bentoml"
    code = "import sys; from pathlib import Path; from deuterium.packaging import save_model; "
    code += "print(save_model(Path(sys.argv[1])).tag)"
    saved = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)],
        env=_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    tag = saved.stdout.strip().splitlines()[-1]
    port = _free_port()
    env = _env(home, DEUTERIUM_MODEL_TAG=tag, DEUTERIUM_PROVIDERS="CPUExecutionProvider")
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:Scoring"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with launch.running(cmd, env, ROOT, work / "serve.log", port, timeout=180) as url:
        yield url


def drive(url: str, clip_dir: Path, concurrency: int, requests: int, seconds: float, warmup: int) -> dict:
    """Run the load generator in its own process (so its CPU time is not this one's); its JSON answer."""
    cmd = [sys.executable, "-m", "bench.serve_benchmark", "--drive", url, "--clips", str(clip_dir)]
    cmd += ["--concurrency", str(concurrency), "--requests", str(requests), "--seconds", str(seconds)]
    cmd += ["--warmup", str(warmup)]
    done = subprocess.run(
        cmd, cwd=ROOT, env=_env(Path(tempfile.gettempdir())), capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"the load process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


async def _load(url: str, clips: list[bytes], concurrency: int, requests: int, seconds: float, warmup: int):
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:

        async def post(i: int) -> tuple[int, float]:
            start = time.perf_counter()
            r = await client.post(
                "/predict", files={"file": ("clip.wav", clips[i % len(clips)], "audio/wav")}
            )
            return r.status_code, time.perf_counter() - start

        for i in range(warmup):
            await post(i)
        latencies: list[float] = []
        statuses: Counter = Counter()
        sent = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                i, sent = sent, sent + 1
                status, latency = await post(i)
                statuses[status] += 1
                if status == 200:
                    latencies.append(latency)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"latencies": latencies, "wall_s": wall, "statuses": {str(k): v for k, v in statuses.items()}}


def batch_sizes(url: str) -> tuple[float, float]:
    """(requests, batches) the model service has scored, from BentoML's adaptive-batching histogram."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    pick = lambda name: sum(  # noqa: E731
        map(
            float, re.findall(rf'adaptive_batch_size_{name}\{{[^}}]*method_name="score"[^}}]*\}} (\S+)', text)
        )
    )
    return pick("sum"), pick("count")


def bare_call(model_dir: Path, clips: list[bytes], requests: int, seconds: float) -> dict:
    """What the service does per request, without it: decode the upload, score it."""
    from deuterium.scoring import Scorer

    scorer = Scorer(model_dir, providers=["CPUExecutionProvider"])
    i = iter(range(10**9))
    one = time_calls(lambda: scorer.predict([scorer.load(clips[next(i) % len(clips)])]), requests, seconds)
    waves = [scorer.load(c) for c in clips]
    batched = time_calls(lambda: scorer.predict(waves), runs=20, max_seconds=seconds)
    per_clip = stats(batched)
    return {
        "one_request": stats(one),
        f"batch_of_{len(clips)}": per_clip,
        "clips_per_second_batched": len(clips) / (per_clip["p50_ms"] / 1000),
    }


# --- report --------------------------------------------------------------------------------------------


def run(model_dir: Path | None, params: Path, out: Path | None, quick: bool = False) -> dict:
    loads = QUICK_LOADS if quick else SERVICE_LOADS
    from deuterium import config

    exp = config.load(params)
    files = clip_files(exp)
    clips = [f.read_bytes() for f in files]
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "params": str(params),
        "quick": quick,
        "backbone": exp.architecture.backbone,
        "folds": len(exp.dataset.folds),
    }
    with tempfile.TemporaryDirectory(prefix="deuterium-bench-") as tmp:
        work = Path(tmp)
        log.info(
            "exporting %s x %d folds (random weights)", exp.architecture.backbone, len(exp.dataset.folds)
        )
        _, module = build(params, work / "export", files)
        from deuterium.scoring import Preprocessing

        decoder = Preprocessing.read(work / "export" / "preprocessing.json").decoder()
        chunks = np.concatenate([np.stack(decoder.pieces(decoder.load(f))) for f in files])
        log.info("PyTorch eager vs onnxruntime")
        report["torch_vs_onnxruntime"] = torch_vs_onnx(
            module, work / "export", chunks, runs=3 if quick else 30
        )
        served = model_dir if model_dir and (model_dir / "model.onnx").is_file() else work / "export"
        report["served_model"] = str(served) if served == model_dir else "this run's export (random weights)"
        report["parity"] = json.loads((served / "parity.json").read_text())
        clip_dir = work / "clips"
        clip_dir.mkdir()
        for k, data in enumerate(clips):
            (clip_dir / f"{k:03d}.wav").write_bytes(data)
        log.info("bare onnxruntime calls")
        report["bare"] = bare_call(served, clips, *loads[1])
        report["service"] = {}
        with service(served, work) as url:
            for concurrency, (requests, seconds) in loads.items():
                log.info("service at concurrency %d", concurrency)
                before = batch_sizes(url)
                got = drive(url, clip_dir, concurrency, requests, seconds, 4 if quick else WARMUP)
                after = batch_sizes(url)
                row = stats(got["latencies"], got["wall_s"]) if got["latencies"] else {}
                scored, batches = after[0] - before[0], after[1] - before[1]
                row |= {"statuses": got["statuses"], "mean_batch": scored / batches if batches else None}
                report["service"][str(concurrency)] = row
        server_log = (work / "serve.log").read_text()
        report["service"]["server_errors_in_log"] = server_log.count(" (status=5")
    bare, c1 = report["bare"]["one_request"], report["service"]["1"]
    limit = 2 * bare["p50_ms"] + 5
    fastest = report["torch_vs_onnxruntime"]["batches"]
    report["targets"] = {
        "service_p50_c1_ms": c1.get("p50_ms"),
        "service_p50_c1_limit_ms": limit,
        "service_p50_c1_met": bool(c1.get("p50_ms", float("inf")) <= limit),
        "service_overhead_p50_ms": c1.get("p50_ms", float("nan")) - bare["p50_ms"],
        "onnxruntime_speedup_min": min(r["speedup_p50"] for r in fastest.values()),
        "onnxruntime_speedup_met": all(r["speedup_p50"] >= 1.5 for r in fastest.values()),
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def table(report: dict) -> str:
    lines = [
        f"{report['backbone']} x {report['folds']} folds; {report['machine']['cpus']} CPUs; "
        f"served: {report['served_model']}",
        "",
        f"{'path':<36}{'p50 ms':>10}{'p99 ms':>10}{'per s':>10}",
    ]
    for batch, row in report["torch_vs_onnxruntime"]["batches"].items():
        for name in ("torch_eager", "onnxruntime"):
            r = row[name]
            lines.append(
                f"{f'{name}, {batch} chunk(s)':<36}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['per_second']:>10.1f}"
            )
        lines.append(f"{'  onnxruntime speed-up (p50)':<36}{row['speedup_p50']:>10.2f}x")
    bare = report["bare"]["one_request"]
    lines.append(
        f"{'bare Scorer, one request':<36}{bare['p50_ms']:>10.1f}{bare['p99_ms']:>10.1f}{bare['per_second']:>10.1f}"
    )
    lines.append(
        f"{'bare Scorer, batched (clips/s)':<36}{'':>20}{report['bare']['clips_per_second_batched']:>10.1f}"
    )
    for c, r in report["service"].items():
        if c == "server_errors_in_log":
            continue
        if r.get("n"):
            name = f"service, concurrency {c} (batch {r['mean_batch'] or 0:.1f})"
            lines.append(f"{name:<36}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['per_second']:>10.1f}")
        else:
            lines.append(f"service, concurrency {c}: no successful request ({r['statuses']})")
    t = report["targets"]
    lines += [
        "",
        f"service p50 at concurrency 1: {t['service_p50_c1_ms']:.1f} ms, target <= 2 x bare + 5 = "
        f"{t['service_p50_c1_limit_ms']:.1f} ms: {'met' if t['service_p50_c1_met'] else 'NOT met'}",
        f"5xx answers in the server's log: {report['service']['server_errors_in_log']}",
        f"onnxruntime vs PyTorch eager: at least {t['onnxruntime_speedup_min']:.2f}x, target 1.5x: "
        f"{'met' if t['onnxruntime_speedup_met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts/export"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    parser.add_argument("--quick", action="store_true", help="a few requests only: checks that it runs")
    # the load process (started by the benchmark itself)
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--clips", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        clips = [p.read_bytes() for p in sorted(args.clips.glob("*.wav"))]
        got = asyncio.run(
            _load(args.drive, clips, args.concurrency, args.requests, args.seconds, args.warmup)
        )
        print(json.dumps(got))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("deuterium", "onnxscript", "onnx_ir", "torch", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = run(args.model_dir, args.params, args.out, args.quick)
    print(table(report))


if __name__ == "__main__":
    main()
