"""The report: one summary row per figure (result, baseline, ratio, target, met), as a Markdown
table for the terminal and a plot (latency CDFs; time to see a change against the poller).
Measures nothing itself."""

from __future__ import annotations


def ratio(a, b):
    try:
        return round(a / b, 2) if b else None
    except TypeError:
        return None


def summarize(r: dict) -> list[dict]:
    rows = []

    def row(figure, result, baseline, target, met, unit=""):
        rows.append({"figure": figure, "result": result, "baseline": baseline,
                     "ratio": ratio(result, baseline) if isinstance(result, (int, float)) else None,
                     "target": target, "met": met, "unit": unit})

    if "latency" in r:
        for ub, floor in zip(r["latency"]["userboard"], r["latency"]["baseline"], strict=True):
            n = ub["clients"]
            row(f"latency p50, {n} clients", ub["p50_ms"], floor["p50_ms"], "<= 1.25x floor",
                ub["p50_ms"] <= 1.25 * floor["p50_ms"], "ms")
            row(f"latency p99, {n} clients", ub["p99_ms"], floor["p99_ms"],
                "<= 5 ms" if n == 100 else "-", ub["p99_ms"] <= 5 if n == 100 else None, "ms")
            row(f"latency max / last client p50, {n} clients",
                f"{ub['max_ms']} / {ub['last_client_p50_ms']}",
                f"{floor['max_ms']} / {floor['last_client_p50_ms']}", "-", None, "ms")
            if n == 100:
                row("latency p50, 100 clients (absolute)", ub["p50_ms"], floor["p50_ms"], "<= 2 ms",
                    ub["p50_ms"] <= 2, "ms")
    if "fanout" in r:
        f = r["fanout"]
        row(f"fan-out deliveries/s, {f['userboard']['clients']} clients",
            f["userboard"]["deliveries_per_s"], f["baseline"]["deliveries_per_s"], ">= 60,000/s",
            f["userboard"]["deliveries_per_s"] >= 60_000, "/s")
        b, bf = f["burst"], f["burst_floor"]
        if "skipped" not in b:
            row(f"burst: {b['rows']} rows to {b['clients']} clients, delivered in",
                b["delivered_s"], bf["delivered_s"], "< 1 s",
                b["delivered_s"] < 1 and b["deliveries"] == b["expected"], "s")
    if "connections" in r:
        c = r["connections"]
        row("memory per idle connection", c["userboard"]["kb_per_connection"],
            c["baseline"]["kb_per_connection"], "<= 40 KB", c["userboard"]["kb_per_connection"] <= 40, "KB")
        row("clients held with broadcast p99 < 150 ms", c["max"]["max_clients"],
            c.get("max_baseline", {}).get("max_clients"), ">= 5,000", c["max"]["max_clients"] >= 5000, "")
    if "write_cost" in r:
        w = r["write_cost"]["sqlite"]
        row("commit p50, capture on (SQLite)", w["commit"]["on"]["p50_us"], w["commit"]["off"]["p50_us"],
            "adds <= 50 us", w["commit"]["added_p50_us"] <= 50, "us")
        if "postgresql" in r["write_cost"]:
            pgc = r["write_cost"]["postgresql"]["commit"]
            row("commit p50, capture on (PostgreSQL)", pgc["on"]["p50_us"], pgc["off"]["p50_us"],
                "adds <= 50 us", pgc["added_p50_us"] <= 50, "us")
        row("API writes/s, capture on", w["api"]["on_per_s"], w["api"]["off_per_s"], ">= 0.8x",
            w["api"]["ratio"] >= 0.8, "/s")
    if "poller" in r:
        p = r["poller"]
        row(f"time to see a change ({p['users']} users, {p['clients']} clients)",
            p["userboard"]["p50_ms"], p["poller"]["p50_ms"], "-", None, "ms")
        row("bytes sent per change", p["userboard"]["bytes_per_change"], p["poller"]["bytes_per_change"],
            "-", None, "B")
    for dialect, v in r.get("views", {}).items():
        views_rows(row, dialect, v)
    for db, target in (("sqlite", 1000), ("postgresql", 20)):
        if db in r.get("outside", {}):
            result = r["outside"][db]
            outside, api = result["latency"]["outside"], result["latency"]["api"]
            row(f"outside write to client p50 ({db})", outside["p50_ms"], api["p50_ms"],
                f"<= {target} ms", outside["p50_ms"] <= target, "ms")
            cost = result["trigger_cost"]
            row(f"triggers on an outside UPDATE, per row ({db})", cost["logged"], cost["skipped"],
                "stated", None, "us")
    if "logins" in r:
        lg = r["logins"]
        quiet, off, on = lg["no_logins"], lg["logins_off_loop"], lg["logins_on_loop"]
        what = f"{lg['logins']} logins at once, {lg['clients']} clients"
        for q in ("p50", "p99"):
            row(f"socket latency {q} during {what}, hashing off the loop (baseline: no logins)",
                off[f"{q}_ms"], quiet[f"{q}_ms"], "-", None, "ms")
        row(f"socket latency p99 during {what}, hashing on the loop (before; baseline: off it)",
            on["p99_ms"], off["p99_ms"], "off the loop lower", off["p99_ms"] < on["p99_ms"], "ms")
    for db in ("sqlite", "postgresql"):
        if db in r.get("relay", {}):
            relay, redis = r["relay"][db]["relay"], r["relay"][db]["redis"]
            row(f"relay: a script's burst of {relay['events']:,} events to {relay['clients']} "
                f"clients, no message queue ({db}; baseline: Redis)", relay["events_per_s"],
                redis.get("events_per_s"), "all, by push", relay["deliveries"] == relay["expected"],
                "events/s")
            row(f"relay: last client complete after the script's last commit ({db})",
                relay["after_last_commit_s"], redis.get("after_last_commit_s"), "-", None, "s")
    return rows


VIEW_CASES = {
    "search": 'search "user00012"', "search_every_row": 'search "example" (every row)',
    "disabled": "status=disabled",
    "active_admins_by_email": "role=admin&status=active by email",
    "recently_updated": "sort=updated_at desc", "recently_updated_next": "its next page (cursor)",
    "recently_updated_deep_page": "a deep page of it (cursor)",
}


def views_rows(row, dialect: str, v: dict) -> None:
    """The views section's rows for one database."""
    db = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[dialect]
    n = f"{v['users']:,} users"
    seeding = v["seeding"]
    row(f"views ({db}): seeding {n}", seeding["seconds"], None, "< 60 s", seeding["seconds"] < 60, "s")
    equal = seeding["totals"]["equal"]
    row(f"views ({db}): user_totals equal to count(*) after seeding", "yes" if equal else "no",
        None, "equal", equal)
    row(f"views ({db}): first dashboard page p50, {n}", v["dashboard"]["p50_ms"], None,
        "<= 150 ms", v["dashboard"]["p50_ms"] <= 150, "ms")
    for name, case in v["api"].items():
        what = VIEW_CASES[name].replace("a deep page", f"page {case['page']:,}") if "page" in case \
            else VIEW_CASES[name]
        row(f"views ({db}): view change p50 over HTTP, {what}", case["api"]["p50_ms"], None,
            "<= 100 ms", case["api"]["p50_ms"] <= 100, "ms")
        row(f"views ({db}): its SQL p50 (baseline: {case['baseline']['what']})",
            case["view_sql"]["p50_ms"], case["baseline"]["p50_ms"], "-", None, "ms")
    live = v["live"]
    clients = live["views"]["clients"]
    row(f"views ({db}): commit to visible change p50, {clients} clients with different views "
        "(baseline: whole-table clients)", live["views"]["p50_ms"], live["whole_table"]["p50_ms"],
        "<= 1.5x", live["ratio_p50"] <= 1.5, "ms")
    row(f"views ({db}): server memory per subscribed view ({live['memory']['clients']} idle viewers)",
        live["memory"]["kb_per_view"], None, "stated, bounded", None, "KB")


def format_table(rows: list[dict]) -> str:
    lines = ["| figure | result | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        unit = f" {r['unit']}" if r["unit"] and r["result"] is not None else ""
        base = "-" if r["baseline"] is None else f"{r['baseline']}{unit}"
        ratio_text = "-" if r["ratio"] is None else f"{r['ratio']}x"
        lines.append(f"| {r['figure']} | {r['result']}{unit} | {base} | {ratio_text} | "
                     f"{r['target']} | {met} |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, color in (("userboard", "#2f6fde"), ("baseline", "#999999")):
        label = "userboard" if kind == "userboard" else "bare broadcast (floor)"
        for stats in results["latency"][kind]:
            samples = sorted(stats["samples_ms"])
            if not samples:
                continue
            ys = [i / len(samples) for i in range(len(samples))]
            style = "-" if kind == "userboard" else "--"
            left.plot(samples, ys, style, color=color, alpha=0.4 + 0.2 * min(3, len(str(stats["clients"]))),
                      label=f"{label}, {stats['clients']} clients")
    left.set_xscale("log")
    left.set_xlabel("write-to-client latency (ms, log)")
    left.set_ylabel("fraction of deliveries")
    left.set_title("Latency CDF, one write at a time")
    left.legend(fontsize=7)
    p = results["poller"]
    names = ["userboard", "5 s snapshot poller"]
    values = [p["userboard"]["p50_ms"], p["poller"]["p50_ms"]]
    right.bar(names, values, color=["#2f6fde", "#c53030"])
    right.set_yscale("log")
    right.set_ylabel("median time to see a change (ms, log)")
    right.set_title(f"{p['users']:,} users, {p['clients']} clients")
    for i, v in enumerate(values):
        right.text(i, v, f"{v:g} ms", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
