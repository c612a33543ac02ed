"""`python -m benchmarks.markdown [RESULTS_DIR]`: the README table from benchmarks/results/*.json."""
# ruff: noqa: RUF001

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import RESULTS_DIR


def _load(d: Path, suite: str) -> dict[str, Any] | None:
    p = d / f"{suite}.json"
    return json.loads(p.read_text()) if p.exists() else None


def render(d: Path = RESULTS_DIR) -> str:
    lines = ["| suite | measurement | this product | baseline / goal | ratio |", "|---|---|---|---|---|"]
    machine = None
    if (o := _load(d, "overhead")) and "results" in o:
        machine = o["machine"]
        r, x, ps = o["results"], o["ratios"], o["per_step_overhead"]
        c = o["parameters"]["concurrency"]
        lines += [
            f"| overhead | sequential latency p50 / p99 | {r['product_seq']['p50']:.0f} / {r['product_seq']['p99']:.0f} ms | raw SDK {r['raw_sdk_seq']['p50']:.0f} / {r['raw_sdk_seq']['p99']:.0f} ms | **{x['sequential_latency_product_vs_raw_sdk']}×** latency |",
            f"| | per step (p50 ÷ 3) | {ps['product_ms']:.0f} ms | raw SDK {ps['raw_sdk_ms']:.0f} ms | +{ps['extra_ms']:.0f} ms/step |",
            f"| | concurrency {c}: tasks/s | {r['product_conc']['tasks_per_s']:.1f} | raw SDK {r['raw_sdk_conc']['tasks_per_s']:.1f} | **{x['concurrent_throughput_product_vs_raw_sdk']}×** throughput |",
        ]
        if "handwritten_seq" in r:  # results from before the hand-written baseline lack it
            lines += [
                f"| | vs hand-written: sequential p50; concurrency {c} tasks/s | {r['product_seq']['p50']:.0f} ms; {r['product_conc']['tasks_per_s']:.1f} | hand-written {r['handwritten_seq']['p50']:.0f} ms; {r['handwritten_conc']['tasks_per_s']:.1f} | **{x['sequential_latency_product_vs_handwritten']}×** latency; **{x['concurrent_throughput_product_vs_handwritten']}×** throughput |",
            ]
        lines += [
            f"| | concurrency {c}: p50 / p99 | {r['product_conc']['p50'] / 1000:.1f} / {r['product_conc']['p99'] / 1000:.1f} s | raw SDK {r['raw_sdk_conc']['p50'] / 1000:.1f} / {r['raw_sdk_conc']['p99'] / 1000:.1f} s | {x['concurrent_p50_latency_product_vs_raw_sdk']}× |",
        ]
    if (t := _load(d, "throughput")) and "results" in t:
        machine = machine or t["machine"]
        ideal = t["parameters"]["ideal_tasks_per_s"]
        names = {"product": "this product", "handwritten": "hand-written Temporal", "raw_sdk": "raw Temporal SDK",
                 "celery_prefork": f"Celery prefork c={t['parameters']['celery_prefork_concurrency']}",
                 "celery_threads": "Celery threads c=200"}
        first = True
        for side, r in t["results"].items():
            ratio = "" if side == "product" else f"product **{t['ratios'][f'product_vs_{side}']}×**"
            lines.append(f"| {'throughput' if first else ''} | {names[side]}: tasks/s (ideal {ideal:.0f}) | "
                         f"{r['tasks_per_s']:.1f} | {100 * r['fraction_of_ideal']:.0f}% of ideal | {ratio} |")
            first = False
        if t.get("skipped"):
            lines.append(f"| | Celery | skipped | {t['skipped']} | |")
    if (a := _load(d, "api")) and "results" in a:
        r, g = a["results"], a["parameters"]["goals"]
        p, q = r["post_tasks"], r["get_task"]
        lines += [
            f"| api | POST /tasks @ {a['parameters']['post_rate']}/s p50 / p99 | {p.get('p50', 'n/a')} / {p.get('p99', 'n/a')} ms | goal p99 ≤ {g['post_p99_ms']:g} ms | {a['ratios']['post_p99_vs_goal']}× goal |",
            f"| | GET /tasks/{{id}} @ {a['parameters']['get_rate']}/s p50 / p99 | {q.get('p50', 'n/a')} / {q.get('p99', 'n/a')} ms | goal p99 ≤ {g['get_p99_ms']:g} ms | {a['ratios']['get_p99_vs_goal']}× goal |",
            f"| | API process CPU per request (POST / GET) | {p.get('api_cpu_ms_per_request')} / {q.get('api_cpu_ms_per_request')} ms | one uvicorn process | |",
            f"| | highest rate within goal (POST / GET) | {r['post_max_rate_within_goal'] or 'none'} / {r['get_max_rate_within_goal'] or 'none'} per s | ladders {a['parameters']['post_ladder']} / {a['parameters']['get_ladder']} | |",
        ]
    if (m := _load(d, "memory")) is not None:
        lines.append(f"| memory | long-term memory | {'see memory.json' if m.get('available') else 'not available'} | | |")
    if (s := _load(d, "startup")) and "results" in s:
        r = s["results"]
        lines += [
            f"| startup | `up` to ready, cold | {r['cold']['p50'] / 1000:.1f} s | max {r['cold']['max'] / 1000:.1f} s | |",
            f"| | `up` to ready, warm | {r['warm']['p50'] / 1000:.1f} s | max {r['warm']['max'] / 1000:.1f} s | cold {s['ratios']['cold_vs_warm']}× warm |",
        ]
    head = ""
    if machine:
        dates = sorted({x["date"][:10] for x in (o, t, a, s) if x})
        quick = any(x.get("quick") for x in (o, t, a, s) if x)
        head = (f"{'Quick' if quick else 'Full'} run of {', '.join(dates)} on {machine['cores']} cores ({machine['cpu_model']}), "
                f"Python {machine['python']}, temporalio {machine['versions'].get('temporalio')}, "
                f"load average at start {machine.get('load_avg_at_start')}. "
                f"{'1 repetition, quick sizes' if quick else 'Median of 3 repetitions'}.\n\n")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_DIR))
