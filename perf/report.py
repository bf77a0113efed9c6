"""Turns perf/run results into Markdown and a hand-written SVG."""

import math
from html import escape

COLORS = {"warren": "#d9822b", "rabbitmq": "#5b7aa8"}
NAMES = {"warren": "warren", "rabbitmq": "RabbitMQ"}


def lat(r, which="latency_us"):
    s = r.get("summary") or {}
    return s.get(which) or {}


def headline(r):
    """The scenario's main rate: deliveries/s, connections/s or queues/s."""
    s = r.get("summary")
    if not s:
        return None
    kind = r.get("kind")
    if kind == "connections":
        return s["connections_rate"]
    if kind == "queues":
        return s["queues_rate"]
    return s["delivered_rate"] or s["published_rate"]


def fmt_n(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e4:
        return f"{v / 1e3:.0f} k"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}" if isinstance(v, (int, float)) else str(v)


def fmt_us(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} s"
    if v >= 1e4:
        return f"{v / 1e3:.0f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.1f} ms"
    return f"{v:.0f} µs"


def mib(b):
    return "–" if b is None else f"{b / 1048576:.0f} MiB"


def one_line(r):
    if r.get("error") and not r.get("summary") and not r.get("rss_bytes"):
        return f"ERROR {r['error']}"
    if "bytes_per_connection" in r:
        return f"RSS {mib(r['rss_before_bytes'])} → {mib(r['rss_bytes'])} ({r['bytes_per_connection']} B/connection)"
    if "bytes_per_message" in r:
        return f"RSS {mib(r['rss_before_bytes'])} → {mib(r['rss_bytes'])} ({r['bytes_per_message']} B/message)"
    s = r.get("summary", {})
    l = lat(r)
    out = f"{fmt_n(headline(r))}/s"
    if l:
        out += f", p50 {fmt_us(l.get('p50'))} p99 {fmt_us(l.get('p99'))}"
    c = lat(r, "confirm_latency_us")
    if c:
        out += f", confirm p99 {fmt_us(c.get('p99'))}"
    out += f", broker CPU {r['cpu_s']} s ({r.get('cpu_s_per_M')} s/M msgs), peak RSS {mib(r['rss_peak_bytes'])}"
    if r.get("error"):
        out += f" [error: {r['error']}]"
    return out


def pairs(results, pred):
    """[(scenario key, title, {broker: result})] in run order."""
    out, seen = [], {}
    for r in results:
        if not pred(r):
            continue
        if r["scenario"] not in seen:
            seen[r["scenario"]] = {}
            out.append((r["scenario"], r.get("title", r["scenario"]), seen[r["scenario"]]))
        seen[r["scenario"]][r["broker"]] = r
    return out


def ratio(by, value, lower_better=False, suffix=""):
    w, q = by.get("warren"), by.get("rabbitmq")
    if not w or not q:
        return ""
    a, b = value(w), value(q)
    if not a or not b:
        return ""
    x = a / b
    s = f"{x:.2f}×" if x < 10 else f"{x:.0f}×"
    return s + suffix


def markdown(doc):
    m = doc["machine"]
    L = ["# warren vs RabbitMQ — warren-perf side by side", ""]
    L.append(f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, Linux {m['kernel']}")
    L.append(f"- **Date:** {m['date']}" + (f" (load average at the end: {m['loadavg_at_end']})" if m.get("loadavg_at_end") else ""))
    L.append("- **Brokers:** " + "; ".join(doc["brokers"].values()))
    L.append(
        f"- **Method:** `perf/run`, {doc['seconds_per_scenario']} s per scenario, brokers alternated scenario by "
        "scenario; warren-perf runs on the same machine and shares its cores with the broker. "
        "Consumers declare their queues and ack every message (prefetch 1000); producers are unthrottled except in the latency scenario. "
        "CPU is the broker process's utime+stime over the whole warren-perf run, per million messages "
        "delivered (published when nothing consumes); RSS is the peak VmRSS sampled every 250 ms."
    )
    for n in doc.get("notes", []):
        L.append(f"- **Note:** {n}")
    L += ["", "## Messaging", ""]
    L.append("| scenario | broker | published/s | delivered/s | p50 | p99 | p99.9 | confirm p99 | "
             "CPU s / M msgs | CPU cores | peak RSS | warren / RabbitMQ |")
    L.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for key, title, by in pairs(doc["results"], lambda r: r.get("kind") in ("rate", "latency")):
        kind = next(iter(by.values()))["kind"]
        if kind == "latency":
            rat = ratio(by, lambda r: lat(r).get("p99"), suffix=" p99 (lower is better)")
        else:
            rat = ratio(by, headline, suffix=" delivered/s")
        for i, b in enumerate(["warren", "rabbitmq"]):
            r = by.get(b)
            if not r:
                continue
            s = r.get("summary")
            if not s:
                L.append(f"| {title if i == 0 else ''} | {NAMES[b]} | error: {r.get('error')} |||||||||")
                continue
            l, c = lat(r), lat(r, "confirm_latency_us")
            err = f" ⚠ {r['error']}" if r.get("error") else ""
            L.append(
                f"| {title if i == 0 else ''} | {NAMES[b]}{err} | {fmt_n(s['published_rate'])} | "
                f"{fmt_n(s['delivered_rate'])} | {fmt_us(l.get('p50'))} | {fmt_us(l.get('p99'))} | "
                f"{fmt_us(l.get('p999'))} | {fmt_us(c.get('p99')) if c else '–'} | "
                f"{r.get('cpu_s_per_M') if r.get('cpu_s_per_M') is not None else '–'} | "
                f"{r.get('cpu_cores', '–')} | {mib(r['rss_peak_bytes'])} | {rat if b == 'warren' else ''} |"
            )
    churn = pairs(doc["results"], lambda r: r.get("kind") in ("connections", "queues"))
    if churn:
        L += ["", "## Churn", ""]
        L.append("| scenario | broker | operations/s | broker CPU ms per 1000 | warren / RabbitMQ |")
        L.append("|---|---|--:|--:|--:|")
        for key, title, by in churn:
            rat = ratio(by, headline)
            for i, b in enumerate(["warren", "rabbitmq"]):
                r = by.get(b)
                if not r:
                    continue
                h = headline(r)
                s = r.get("summary") or {}
                ops = s.get("connections") or s.get("queues") or 0
                per = f"{r['cpu_s'] / ops * 1e6:.0f}" if ops else "–"
                err = f" ⚠ {r['error']}" if r.get("error") else ""
                L.append(f"| {title if i == 0 else ''} | {NAMES[b]}{err} | {fmt_n(h)} | {per} | "
                         f"{rat if b == 'warren' else ''} |")
    mem = pairs(doc["results"], lambda r: "rss_bytes" in r)
    if mem:
        L += ["", "## Memory", ""]
        L.append("| scenario | broker | RSS before | RSS with load | per item | warren / RabbitMQ |")
        L.append("|---|---|--:|--:|--:|--:|")
        for key, title, by in mem:
            rat = ratio(by, lambda r: r.get("bytes_per_connection") or r.get("bytes_per_message"), suffix=" per item")
            for i, b in enumerate(["warren", "rabbitmq"]):
                r = by.get(b)
                if not r:
                    continue
                if r["scenario"].startswith("idle"):
                    name = "1000 idle connections"
                    per = "–"
                    if "bytes_per_connection" in r:
                        per = f"{r['bytes_per_connection'] / 1024:.1f} KiB/connection"
                        if r["connections"] != 1000:
                            per += f" (only {r['connections']} accepted)"
                elif "bytes_per_message" in r:
                    per = f"{r['bytes_per_message']:.0f} B/message"
                    name = f"{r['messages']:,} waiting 16 B messages"
                    if r.get("publish_rate"):
                        per += f" (filled at {fmt_n(r['publish_rate'])}/s)"
                else:
                    per, name = "–", key
                err = f" ⚠ {r['error']}" if r.get("error") else ""
                L.append(f"| {name if i == 0 else ''} | {NAMES[b]}{err} | {mib(r['rss_before_bytes'])} | "
                         f"{mib(r['rss_bytes'])} | {per} | {rat if b == 'warren' else ''} |")
    L += ["", "![rates and p99 latency](latest.svg)", ""]
    return "\n".join(L)


def _log_axis(values):
    vals = [v for v in values if v and v > 0]
    if not vals:
        return 0, 1
    return math.floor(math.log10(min(vals))), max(math.ceil(math.log10(max(vals))), math.floor(math.log10(min(vals))) + 1)


def _panel(out, x0, width, top, rows, values, title, fmt):
    """Horizontal log-scale bars; rows: list of (y, broker, value)."""
    lo, hi = _log_axis(values)
    height = (rows[-1][0] + 20 - top) if rows else 40
    out.append(f'<text x="{x0}" y="{top - 34}" class="h">{escape(title)}</text>')
    for d in range(lo, hi + 1):
        x = x0 + (d - lo) / (hi - lo) * width
        out.append(f'<line x1="{x:.1f}" y1="{top - 12}" x2="{x:.1f}" y2="{top + height}" class="g"/>')
        tick = fmt(10**d).replace(".00 ", " ").replace(".0 ", " ")
        out.append(f'<text x="{x:.1f}" y="{top - 14}" class="t" text-anchor="middle">{tick}</text>')
    for y, broker, v in rows:
        if not v or v <= 0:
            out.append(f'<text x="{x0 + 4}" y="{y + 11}" class="t">n/a</text>')
            continue
        w = max(1.0, (math.log10(v) - lo) / (hi - lo) * width)
        out.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="14" fill="{COLORS[broker]}"/>')
        out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 11}" class="t">{fmt(v)}</text>')


def svg(doc):
    groups = pairs(doc["results"], lambda r: r.get("kind") in ("rate", "latency", "connections", "queues"))
    top, row, gap = 80, 16, 14
    rows_rate, rows_lat, labels = [], [], []
    y = top
    for key, title, by in groups:
        labels.append((y, title))
        for b in ("warren", "rabbitmq"):
            if b in by:
                r = by[b]
                rows_rate.append((y, b, headline(r)))
                rows_lat.append((y, b, lat(r).get("p99") if r.get("kind") in ("rate", "latency") else None))
                y += row
        y += gap
    h = y + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="1100" height="{h}" viewBox="0 0 1100 {h}" '
        'font-family="sans-serif">',
        "<style>.h{font-size:14px;font-weight:bold}.t{font-size:11px;fill:#333}.l{font-size:12px}"
        ".g{stroke:#ddd;stroke-width:1}</style>",
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for yy, title in labels:
        words, lines, cur = title.split(), [], ""
        for w in words:
            if len(cur) + len(w) > 36:
                lines.append(cur)
                cur = w
            else:
                cur = (cur + " " + w).strip()
        lines.append(cur)
        for i, ln in enumerate(lines[:2]):
            out.append(f'<text x="10" y="{yy + 12 + i * 13}" class="l">{escape(ln)}</text>')
    _panel(out, 290, 360, top, rows_rate, [v for _, _, v in rows_rate],
           "rate (msgs/s delivered, or ops/s), log scale", fmt_n)
    _panel(out, 740, 300, top, rows_lat, [v for _, _, v in rows_lat],
           "p99 publish→deliver latency, log scale", fmt_us)
    lx = 10
    for b in ("warren", "rabbitmq"):
        out.append(f'<rect x="{lx}" y="{h - 28}" width="14" height="14" fill="{COLORS[b]}"/>')
        out.append(f'<text x="{lx + 20}" y="{h - 17}" class="l">{NAMES[b]}</text>')
        lx += 110
    m = doc["machine"]
    out.append(f'<text x="250" y="{h - 17}" class="t">{escape(m["cpu"])}, {m["cores"]} cores, '
               f'{escape(m["date"])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
