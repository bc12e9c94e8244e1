"""Rows, targets and the written report of the inference benchmark."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from benchmarks.inference.wrk import Load, wrk_version

TARGETS = {
    "tiny_batched_rps": ">= 8000 req/s, tiny MLP, batching on, 32 connections, one server core",
    "added_p50_ms": "<= 1 ms p50 added over raw ORT at one connection (tiny, batching on)",
    "mid_batching_gain": ">= 3x throughput from batching, mid-size MLP, at p99 <= 20 ms",
    "logging_ratio": ">= 0.95 of logging-off throughput with prediction logging on",
}


def machine_state() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
        "python": platform.python_version(),
    }


def floor_row(model: str, batch: int, result: dict[str, float]) -> dict[str, Any]:
    return {
        "model": model,
        "scenario": f"raw ORT in-process, {batch} row(s) per run",
        "kind": "floor",
        "batch": batch,
        "connections": 1,
        "rps": result["runs_per_s"],
        "rows_per_s": result["rows_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "cpu_us_per_request": None,
        "errors": 0,
    }


def service_row(
    model: str, label: str, body: str, connections: int, load: Load, cpu_us: float
) -> dict[str, Any]:
    scenario = label
    if label == "cache":
        scenario = "cache hit" if body == "fixed" else "cache miss"
    elif "log on" not in label:
        scenario = f"{label}, log off"
    return {
        "model": model,
        "scenario": f"service, {scenario}",
        "kind": "service",
        "label": label,
        "body": body,
        "connections": connections,
        "rps": load.rps,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "cpu_us_per_request": cpu_us,
        "errors": load.non_2xx + load.socket_errors,
    }


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def summarize(
    rows: list[dict[str, Any]],
    before: dict[str, Any],
    after: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    targets: dict[str, dict[str, Any]] = {}
    tiny_on_32 = _find(rows, model="tiny", label="batching on", body="fixed", connections=32)
    tiny_on_1 = _find(rows, model="tiny", label="batching on", body="fixed", connections=1)
    tiny_floor = _find(rows, model="tiny", kind="floor", batch=1)
    tiny_log = _find(rows, model="tiny", label="batching on, log on", connections=32)
    mid_on = _find(rows, model="mid", label="batching on", connections=32)
    mid_off = _find(rows, model="mid", label="batching off", connections=32)
    if tiny_on_32:
        value = tiny_on_32["rps"]
        targets["tiny_batched_rps"] = {"value": round(value), "met": value >= 8000}
        if tiny_on_32["cpu_us_per_request"]:
            # What one core serves when this process has it to itself.
            capacity = 1e6 / tiny_on_32["cpu_us_per_request"]
            targets["tiny_batched_rps"]["cpu_bound_rps"] = round(capacity)
    if tiny_on_1 and tiny_floor:
        value = tiny_on_1["p50_ms"] - tiny_floor["p50_ms"]
        targets["added_p50_ms"] = {"value": round(value, 3), "met": value <= 1.0}
    if mid_on and mid_off and mid_off["rps"]:
        value = mid_on["rps"] / mid_off["rps"]
        targets["mid_batching_gain"] = {
            "value": round(value, 2),
            "p99_ms": round(mid_on["p99_ms"], 2),
            "met": value >= 3 and mid_on["p99_ms"] <= 20,
        }
        if mid_on["cpu_us_per_request"] and mid_off["cpu_us_per_request"]:
            cpu_gain = mid_off["cpu_us_per_request"] / mid_on["cpu_us_per_request"]
            targets["mid_batching_gain"]["cpu_gain"] = round(cpu_gain, 2)
    if tiny_log and tiny_on_32 and tiny_on_32["rps"]:
        value = tiny_log["rps"] / tiny_on_32["rps"]
        cpu = None
        if tiny_log["cpu_us_per_request"] and tiny_on_32["cpu_us_per_request"]:
            cpu = round(tiny_on_32["cpu_us_per_request"] / tiny_log["cpu_us_per_request"], 3)
        targets["logging_ratio"] = {
            "value": round(value, 3),
            "cpu_ratio": cpu,
            "met": value >= 0.95,
        }
    for key, text in TARGETS.items():
        targets.setdefault(key, {"value": None, "met": False})["target"] = text
    # On a shared machine other work takes part of the server's core, so req/s
    # understates what the service does on a core of its own; CPU time per request
    # does not. Each target is also judged on it where it can be.
    checks = {
        "tiny_batched_rps": ("cpu_bound_rps", lambda v: v >= 8000),
        "logging_ratio": ("cpu_ratio", lambda v: v >= 0.95),
        "mid_batching_gain": ("cpu_gain", lambda v: v >= 3),
    }
    for key, (field, passes) in checks.items():
        if targets[key].get(field) is not None:
            targets[key]["met_on_cpu_time"] = passes(targets[key][field])
    return {
        "machine_before": before,
        "machine_after": after,
        "load_generator": wrk_version(),
        "options": options,
        "rows": rows,
        "targets": targets,
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(result: dict[str, Any]) -> str:
    header = (
        f"{'model':<5} {'scenario':<48} {'conns':>5} {'req/s':>9} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'CPU us/req':>10} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    for row in result["rows"]:
        lines.append(
            f"{row['model']:<5} {row['scenario']:<48} {row['connections']:>5} "
            f"{_fmt(row['rps'], 0):>9} {_fmt(row['p50_ms'], 3):>7} {_fmt(row['p99_ms'], 3):>7} "
            f"{_fmt(row['cpu_us_per_request'], 1):>10} {row['errors']:>6}"
        )
    lines.append("")
    for target in result["targets"].values():
        mark = "met" if target["met"] else "NOT met"
        extra = {k: v for k, v in target.items() if k not in {"target", "met", "value"}}
        lines.append(f"{mark:>8}  {target['target']}: {target['value']} {extra or ''}".rstrip())
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    before, after = result["machine_before"], result["machine_after"]
    out = [
        "# Inference benchmark",
        "",
        "`python -m benchmarks.inference` (see `benchmarks/inference/run.py`): the service "
        "pinned to one core with `taskset`, driven over loopback by "
        f"`{result['load_generator']}` pinned to the other core; the floor is raw ONNX "
        "Runtime in-process on the server's core. Best of "
        f"{result['options']['repeat']} interleaved runs of {result['options']['seconds']:.0f} s "
        "per scenario. `CPU us/req` is the server process's own CPU time per request "
        "(all its threads), which depends far less on other load than req/s does.",
        "",
        f"Machine: {before['cpus']} CPUs ({before['cpu_model']}), Python {before['python']}, "
        f"{before['at']}, niceness {before.get('nice', 0)}. "
        f"Load average before {before['load_average']}, after "
        f"{after['load_average']}: the machine was shared with other work while this ran, "
        "so these numbers are a lower bound of what a quiet machine gives.",
        "",
        "| model | scenario | conns | req/s | p50 ms | p99 ms | CPU us/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        out.append(
            f"| {row['model']} | {row['scenario']} | {row['connections']} | "
            f"{_fmt(row['rps'], 0)} | {_fmt(row['p50_ms'], 3)} | {_fmt(row['p99_ms'], 3)} | "
            f"{_fmt(row['cpu_us_per_request'], 1)} | {row['errors']} |"
        )
    out += [
        "",
        "`met` judges the measured req/s; `met on CPU time` judges the server's CPU time "
        "per request, i.e. what one core of its own would give.",
        "",
        "| target | measured | met | met on CPU time |",
        "|---|---|---|---|",
    ]
    for target in result["targets"].values():
        shown = {"target", "met", "value", "met_on_cpu_time"}
        extra = {k: v for k, v in target.items() if k not in shown}
        value = f"{target['value']}" + (f" {extra}" if extra else "")
        on_cpu = target.get("met_on_cpu_time")
        cpu = "-" if on_cpu is None else "yes" if on_cpu else "no"
        out.append(f"| {target['target']} | {value} | {'yes' if target['met'] else 'no'} | {cpu} |")
    return "\n".join(out) + "\n"
