"""`warpserve bench kernels`: microseconds per call of every quantized-matmul kernel
against fp32 nn.Linear, per layer shape of SmolLM2-135M.

    warpserve bench kernels [--tokens 1 4 32 64 256] [--threads 1] [--reps 15]
        [--clock wall|cpu] [--out bench_results/kernels.json] [--from-json saved.json]

All candidates of one (shape, M) cell are timed interleaved, one call each per round, and the
median over rounds is reported, so a noisy shared machine slows every candidate alike.
A candidate whose warm-up call takes more than SLOW_FACTOR x fp32 is reported as skipped
(the scalar fallbacks take seconds on the LM head).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from warpserve.quant import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    QuantizedLinear,
    W8A8Linear,
)
from warpserve.quant import kernels as K

# SmolLM2-135M's linear shapes (N = out_features, K = in_features), fused as in
# warpserve/models/llama.py.
SHAPES: dict[str, tuple[int, int]] = {
    "qkv_proj": (960, 576),
    "o_proj": (576, 576),
    "gate_up_proj": (3072, 576),
    "down_proj": (576, 1536),
    "lm_head": (49152, 576),
}
TOKENS = (1, 4, 32, 64, 256)
SLOW_FACTOR = 20.0
INT4_GROUP_SIZE = 32


@dataclass(frozen=True)
class Row:
    layer: str
    num_tokens: int
    kernel: str  # "<scheme>/<kernel>"
    us_per_call: float | None  # None: skipped as too slow
    gb_per_s: float | None  # weight + activation bytes moved per second
    gop_per_s: float | None  # 2*M*N*K per second
    vs_fp32: float | None  # fp32 time / this time (> 1: faster)
    is_chosen: bool  # the module's own policy picks this kernel at this M


def _candidates(
    linear: nn.Linear,
) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]]:
    """name -> (call, weight bytes read per call)."""
    n, k = linear.out_features, linear.in_features
    int8 = Int8WeightOnlyLinear.from_linear(linear)
    w8a8 = W8A8Linear.from_linear(linear)
    int4 = Int4WeightOnlyLinear.from_linear(linear, group_size=INT4_GROUP_SIZE)
    int4_bytes = n * k / 2 + n * (k // INT4_GROUP_SIZE) * 4  # nibbles + bf16 (scale, zero)
    out: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {
        "fp32/linear": (linear, 4.0 * n * k)
    }
    for scheme, module, nbytes in (
        ("int8", int8, n * k),
        ("w8a8", w8a8, n * k),
        ("int4", int4, int4_bytes),
    ):
        for name in module.kernels:
            out[f"{scheme}/{name}"] = (_bound(module, name), float(nbytes))
    out["ref/fbgemm_dynamic_per_tensor"] = (_fbgemm_dynamic(linear), float(n * k))
    return out


def _bound(module: QuantizedLinear, kernel: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module.matmul(x, kernel)


def _fbgemm_dynamic(linear: nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.ao's dynamic int8 linear (fbgemm): per-tensor activation scale, so it is a
    reference point only; W8A8Linear quantizes per token."""
    from warpserve.quant.primitives import quantize_int8_per_channel

    q, scale = quantize_int8_per_channel(linear.weight)
    zeros = torch.zeros(q.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # torch.ao's deprecation notice, not ours to act on
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
    packed = torch.ops.quantized.linear_prepack(qweight, None)
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, True)


def _chosen(kernel: str, num_tokens: int) -> bool:
    scheme, name = kernel.split("/")
    policy = {
        "int8": lambda: K.choose_int8_wo_kernel(num_tokens),
        "int4": lambda: K.choose_int4_kernel(num_tokens),
        "w8a8": lambda: K.choose_w8a8_kernel(num_tokens, fast_int_mm=K.has_fast_int_mm()),
    }.get(scheme)
    return policy is not None and policy() == name


def _time_cell(
    calls: dict[str, Callable[[], object]], reps: int, clock: Callable[[], float]
) -> dict[str, float | None]:
    """Median seconds per call, interleaved; None for candidates too slow to time."""
    warm: dict[str, float] = {}
    for name, call in calls.items():
        call()  # first call: one-time packing and allocation
        start = clock()
        call()
        warm[name] = clock() - start
    limit = max(SLOW_FACTOR * warm["fp32/linear"], 0.02)
    live = {name: call for name, call in calls.items() if warm[name] <= limit}
    samples: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(reps):
        for name, call in live.items():
            start = clock()
            call()
            samples[name].append(clock() - start)
    return {name: statistics.median(samples[name]) if name in live else None for name in calls}


def bench_shape(layer: str, num_tokens: int, reps: int, clock: Callable[[], float]) -> list[Row]:
    n, k = SHAPES[layer]
    torch.manual_seed(0)
    linear = nn.Linear(k, n, bias=False).requires_grad_(False)
    candidates = _candidates(linear)
    x = torch.randn(num_tokens, k)
    with torch.inference_mode():
        seconds = _time_cell(
            {name: partial(f, x) for name, (f, _) in candidates.items()}, reps, clock
        )
    base = seconds["fp32/linear"]
    rows = []
    for name, (_, weight_bytes) in candidates.items():
        t = seconds[name]
        moved = weight_bytes + 4.0 * num_tokens * (n + k)
        rows.append(
            Row(
                layer, num_tokens, name,
                None if t is None else t * 1e6,
                None if t is None else moved / t / 1e9,
                None if t is None else 2.0 * num_tokens * n * k / t / 1e9,
                None if t is None or base is None else base / t,
                _chosen(name, num_tokens),
            )
        )  # fmt: skip
    return rows


def measure(
    tokens: Sequence[int] = TOKENS,
    layers: Sequence[str] = tuple(SHAPES),
    reps: int = 15,
    threads: int | None = None,
    clock: str = "wall",
) -> list[Row]:
    """clock "cpu" times the calling thread's CPU time: immune to being descheduled on a
    shared machine, so only meaningful with threads=1."""
    if threads is not None:
        torch.set_num_threads(threads)
    if clock == "cpu" and torch.get_num_threads() != 1:
        raise ValueError("clock='cpu' counts one thread's CPU time: use it with threads=1")
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    rows: list[Row] = []
    for layer in layers:
        for num_tokens in tokens:
            rows.extend(bench_shape(layer, num_tokens, reps, timer))
            print_rows([r for r in rows if r.layer == layer and r.num_tokens == num_tokens])
    return rows


def print_rows(rows: list[Row]) -> None:
    for r in rows:
        if r.us_per_call is None:
            print(
                f"{r.layer:13s} M={r.num_tokens:<4d} {r.kernel:34s} skipped (>{SLOW_FACTOR:.0f}x fp32)"
            )
            continue
        mark = "  <- chosen" if r.is_chosen else ""
        print(
            f"{r.layer:13s} M={r.num_tokens:<4d} {r.kernel:34s} {r.us_per_call:10.1f} us "
            f"{r.gb_per_s:7.1f} GB/s {r.gop_per_s:7.1f} GOP/s {r.vs_fp32:5.2f}x{mark}",
            flush=True,
        )


def markdown_summary(rows: list[Row]) -> str:
    """One line per (layer, M): fp32, each scheme's chosen kernel, and the fbgemm reference."""
    header = "| layer | M | fp32 | int8 (chosen) | int4 g32 (chosen) | w8a8 (chosen) | fbgemm per-tensor (ref) |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    cells: dict[tuple[str, int], dict[str, Row]] = {}
    for r in rows:
        key = "ref" if r.kernel.startswith("ref/") else r.kernel.split("/")[0]
        if r.is_chosen or key in ("fp32", "ref"):
            cells.setdefault((r.layer, r.num_tokens), {})[key] = r
    for (layer, num_tokens), by in cells.items():
        parts = [
            _cell(by.get(k), with_name=k not in ("fp32", "ref"))
            for k in ("fp32", "int8", "int4", "w8a8", "ref")
        ]
        lines.append(f"| {layer} | {num_tokens} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def _cell(row: Row | None, *, with_name: bool) -> str:
    if row is None or row.us_per_call is None:
        return "-"
    name = f" {row.kernel.split('/')[1]}" if with_name else ""
    return f"{row.us_per_call:.0f} us ({row.vs_fp32:.2f}x){name}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--layers", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="cpu: one thread's CPU time"
    )
    parser.add_argument("--out", default="bench_results/kernels.json")
    parser.add_argument("--from-json", default=None, help="only print the summary of a saved run")


def run(args: argparse.Namespace) -> int:
    from warpserve.bench.report import environment, write_json

    if args.from_json:
        with open(args.from_json) as f:
            print(markdown_summary([Row(**r) for r in json.load(f)["rows"]]))
        return 0
    rows = measure(args.tokens, args.layers, args.reps, args.threads, args.clock)
    print(markdown_summary(rows))
    payload = {
        "environment": environment(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "vnni": K.has_fast_int_mm(),
        "config": vars(args),
        "rows": [asdict(r) for r in rows],
    }
    print(f"wrote {write_json(args.out, payload)}")
    return 0
