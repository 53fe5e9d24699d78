"""Baton's NLU against Rasa's (DIET) on the same data, on the same machine, in one run.

For each set: Baton's engine is trained and scored by ``baton evaluate`` (one process: its
peak memory covers training and serving); Rasa is trained by ``rasa train`` with the config
of ``bot/rasa/`` (stated in full in bench/RESULTS.md), then served by ``rasa run --enable-api``
and asked ``POST /model/parse`` for every test message, one at a time (latency as a customer
meets it). Both are scored with the same rule (bot.evaluation.score): an ``out_of_scope``
example is caught by ``out_of_scope`` or ``nlu_fallback``.

Sets: BANKING77 (English, 77 intents; Rasa's standard English config), the Chinese
development set and the out-of-scope set (both trained on nlu_data, Rasa's mixed config).

Usage (after `make install rasa-venv`; an idle machine; about an hour with the default epochs):
    .venv/bin/python bench/rasa_peer.py --json [--sets banking77 zh oos] [--banking-epochs 30] [--kb-epochs 100]
Writes one JSON line per set to bench/out/rasa_peer.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.baton_serving_memory import serving_peak_mb  # noqa: E402  (the path above makes it importable)
from bench.measure import run_measured  # noqa: E402
from bot.evaluation import score  # noqa: E402
from bot.nlu.rasa_client import RasaNLU, to_parse_result  # noqa: E402
from bot.rasa_project import prepare, rasa_binary, train_command, write_config  # noqa: E402
from conversations.redis_server import free_port  # noqa: E402
from knowledge_index.nlu_file import load_nlu_file  # noqa: E402

OUT = ROOT / "bench" / "out"
DATA = ROOT / "bench" / "data"
BANKING77 = ROOT.parent / "shared" / "datasets" / "banking77"
READY_SECONDS = 600


@dataclass(frozen=True)
class Benchmark:
    """One comparison: train on ``train``, score on ``test``."""

    name: str
    train: Path
    test: Path
    rasa_config: str  # a key of bot.rasa_project.CONFIGS
    kb: Path | None  # a knowledge-base folder: Rasa trains on it with the project's domain and rules


def baton(bench: Benchmark) -> dict:
    """``baton evaluate`` on the set: its metrics, latency percentiles and peak memory."""
    report = OUT / f"rasa_peer-baton-{bench.name}.json"
    command = [
        str(ROOT / ".venv/bin/baton"),
        "evaluate",
        "--train",
        str(bench.train),
        "--test",
        str(bench.test),
    ]
    command += ["--json", "--report", str(report)]
    status, out, err, _, peak = run_measured(command, cwd=ROOT)
    if status != 0:
        raise RuntimeError(f"baton evaluate failed ({status}):\n{err[-2000:]}")
    metrics = json.loads(out.strip().splitlines()[-1])
    details = json.loads(report.read_text(encoding="utf-8"))
    return {
        "accuracy": metrics["accuracy"],
        "in_scope_accuracy": metrics["in_scope_accuracy"],
        "oos_recall": metrics["oos_recall"],
        "train_seconds": metrics["train_seconds"],
        "parse_ms_p50": metrics["predict_ms_p50"],
        "parse_ms_p99": details["predict_ms_p99"],
        "peak_rss_mb": round(peak),
        "serving_peak_rss_mb": round(serving_peak_mb(bench.train, bench.test)),
        "how": "in-process parse, one message at a time (300-message sample); peak_rss_mb: the "
        "evaluate process (training and parsing); serving_peak_rss_mb: a process that loads the "
        "saved model and parses every test message",
    }


def train_rasa(
    bench: Benchmark, work: Path, epochs: int, rasa: Path
) -> tuple[Path, float, float, float | None]:
    """Train Rasa for the set: the model, wall seconds of ``rasa train``, its peak memory, and DIET's
    intent accuracy on the training data after the last epoch (shows whether the epochs sufficed)."""
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false"}
    if bench.kb is not None:
        workspace = prepare(bench.kb, work, epochs=epochs, config=bench.rasa_config)
        command, model = train_command(rasa, workspace), workspace.model
    else:
        work.mkdir(parents=True, exist_ok=True)
        config = write_config(work / "config.yml", bench.rasa_config, epochs)
        command = [str(rasa), "train", "nlu", "--config", str(config), "--nlu", str(bench.train)]
        command += ["--out", str(work / "models"), "--fixed-model-name", "nlu"]
        model = work / "models" / "nlu.tar.gz"
    status, _, err, seconds, peak = run_measured(command, cwd=work, env=env)
    if status != 0 or not model.exists():
        raise RuntimeError(f"rasa train failed ({status}):\n{err[-3000:]}")
    (work / "train.log").write_text(err, encoding="utf-8")
    # DIET trains first and reports i_acc in its progress bar; the ResponseSelector reports r_acc.
    diet = re.findall(r"i_acc=([0-9.]+)", err)
    return model, seconds, peak, float(diet[-1]) if diet else None


def peak_rss_mb(pid: int) -> float:
    """A running process's peak resident memory (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def serve_and_score(bench: Benchmark, model: Path, work: Path, rasa: Path) -> dict:
    """Serve ``model`` and parse every test message over HTTP; metrics, latencies, server memory."""
    port = free_port()
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false"}
    command = [str(rasa), "run", "--enable-api", "--interface", "127.0.0.1", "--port", str(port)]
    command += ["--model", str(model)]
    with open(work / "server.log", "wb") as log:
        server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=30) as client, RasaNLU(url, timeout=2) as rasa_client:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"rasa run ended; see {work / 'server.log'}")
                if time.perf_counter() - started > READY_SECONDS:
                    raise RuntimeError(f"rasa run not ready after {READY_SECONDS} s")
                if rasa_client.ready():
                    break
                time.sleep(1)
            ready_seconds = time.perf_counter() - started
            test = load_nlu_file(bench.test, 50_000_000, []).examples
            for example in test[:5]:  # warm, as Baton's evaluate warms its engine
                client.post("/model/parse", json={"text": example.text})
            predicted, timings = [], []
            for example in test:
                t0 = time.perf_counter()
                answer = client.post("/model/parse", json={"text": example.text})
                timings.append((time.perf_counter() - t0) * 1000)
                answer.raise_for_status()
                predicted.append(to_parse_result(example.text, answer.json()).intent.name)
        metrics = score([e.intent for e in test], predicted)
        return {
            "accuracy": metrics["accuracy"],
            "in_scope_accuracy": metrics["in_scope_accuracy"],
            "oos_recall": metrics["oos_recall"],
            "parse_ms_p50": round(float(np.percentile(timings, 50)), 2),
            "parse_ms_p99": round(float(np.percentile(timings, 99)), 2),
            "server_peak_rss_mb": round(peak_rss_mb(server.pid)),
            "server_ready_seconds": round(ready_seconds, 1),
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def benchmarks() -> dict[str, Benchmark]:
    """The sets of the issue, by name (BANKING77 is converted to Rasa's format first)."""
    banking = OUT / "banking77"
    if not (banking / "test.yml").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench/banking77_to_rasa.py"), str(BANKING77), str(banking)],
            check=True,
        )
    kb = ROOT / "nlu_data"
    return {
        "banking77": Benchmark("banking77", banking / "train.yml", banking / "test.yml", "en", None),
        "zh": Benchmark("zh", kb / "nlu.yml", DATA / "zh_dev.yml", "mixed", kb),
        "oos": Benchmark("oos", kb / "nlu.yml", DATA / "oos_test.yml", "mixed", kb),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison for the chosen sets and print (and append) one record per set."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sets", nargs="+", choices=["banking77", "zh", "oos"], default=["banking77", "zh", "oos"]
    )
    parser.add_argument(
        "--banking-epochs", type=int, default=30, help="Rasa's epochs on BANKING77 (default 30)"
    )
    parser.add_argument("--kb-epochs", type=int, default=100, help="Rasa's epochs on nlu_data (default 100)")
    parser.add_argument("--rasa-venv", type=Path, default=ROOT / ".venv-rasa", help="the Rasa venv")
    parser.add_argument("--json", action="store_true", help="print one JSON object per set")
    args = parser.parse_args(argv)
    rasa = rasa_binary(args.rasa_venv)
    OUT.mkdir(parents=True, exist_ok=True)
    sets = benchmarks()
    trained: dict[
        Path, tuple[Path, float, float, float | None, int]
    ] = {}  # zh and oos share nlu_data's model
    for name in args.sets:
        bench = sets[name]
        work = OUT / "rasa_peer" / (bench.kb.name if bench.kb else name)
        epochs = args.banking_epochs if bench.kb is None else args.kb_epochs
        if bench.train not in trained:
            trained[bench.train] = (*train_rasa(bench, work, epochs, rasa), epochs)
        model, train_seconds, train_peak, train_accuracy, epochs = trained[bench.train]
        rasa_figures = {
            "epochs": epochs,
            "diet_train_accuracy": train_accuracy,
            "config": bench.rasa_config,
            "train_seconds": round(train_seconds, 1),
            "train_peak_rss_mb": round(train_peak),
            **serve_and_score(bench, model, work, rasa),
        }
        record = {
            "set": name,
            "train": str(bench.train.relative_to(ROOT)),
            "test": str(bench.test.relative_to(ROOT)),
            "baton": baton(bench),
            "rasa": rasa_figures,
            "cores": os.cpu_count(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with open(OUT / "rasa_peer.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record) if args.json else json.dumps(record, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
