"""How much of a host-bound call's event time is the host's: the same calls timed by CUDA events around the
call itself and around a replay of the call captured as a CUDA graph (whose host cost is a few microseconds).

    PYTHONPATH=src python benchmarks/host_bound_protocols.py [--out results.json] FILE ...     # on a CUDA GPU

Per file, at its own get_inputs() (the bench shape on a GPU): the Triton wrapper and the file's PyTorch
function, each timed both ways in interleaved rounds, the L2 flushed before every call, and the host time
of a bare call. A call whose event time drops to its graph time once the host is out is host-bound: its
event time measures how fast the host enqueues it. Reports medians with the p20-p80 band, in ms.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from host_cost import host_ms, load  # benchmarks/, beside this script

ROUNDS = 40
CALLS = 10


def graphed(fn, args):
    """A replay of ``fn(*args)`` captured as a CUDA graph (warmed up on a side stream first, as capture wants)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(*args)
    return graph.replay


def band(values: list[float]) -> dict:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"median_ms": round(statistics.median(values), 5), "p20_ms": round(pick(0.2), 5),
            "p80_ms": round(pick(0.8), 5)}


def measure(path: str) -> dict:
    module = load(path)
    args = module.get_inputs()
    flush = torch.empty(256 * 1024**2, dtype=torch.uint8, device="cuda")
    contenders = {"triton": module.fused_kernel_triton_wrapper, "pytorch": module.fused_kernel_pytorch}
    ways = {}
    for name, fn in contenders.items():
        ways[f"{name} events"] = lambda fn=fn: fn(*args)
        ways[f"{name} graph"] = graphed(fn, args)
    samples: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(ROUNDS):
        for way, call in ways.items():
            for _ in range(CALLS):
                flush.zero_()
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                call()
                end.record()
                end.synchronize()
                samples[way].append(begin.elapsed_time(end))
    row = {way: band(values) for way, values in samples.items()}
    row.update({f"{name} host_ms": host_ms(fn, args) for name, fn in contenders.items()})
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": {}}
    for path in args.files:
        row = measure(path)
        result["rows"][path] = row
        print(Path(path).name, json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
