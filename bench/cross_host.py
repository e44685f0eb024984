#!/usr/bin/env python3
"""Issue 19 benchmark: round trips and wall time of a no-op apply on 20 light lab hosts, with
and without values that cross hosts (`secret` steps with `source = "GROUP"`).

One light lab of N hosts (default 20); an inventory with the groups `data` (h1, or --data-host)
and `app` (the others); two playbooks of the same work (bench/cross_host/a.toml and b.toml: 10 steps, three
secrets, a template using them, files and directories), A where every host keeps its own
secrets, B where the three secrets have `source = "data"`. Each is applied once to converge,
then RUNS rounds of (no-op apply A, no-op apply B, plan A, plan B), alternated in one sitting.
Every no-op apply must change nothing, and the connections and sessions it reports must equal
what the hosts' sshd logged (as bench/run.py checks). Writes
bench/results/issue19-cross-host-noop-N.md and .json (never latest.*).

    BENCH_BIN=/path/to/release/claw-provision python3 bench/cross_host.py [--hosts 20] [--runs 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as base  # noqa: E402  (bench/run.py: sh)

REPO = HERE.parent
BIN = Path(os.environ.get("BENCH_BIN", REPO / "target/release/claw-provision"))
LAB = REPO / "tests/lab/lab.sh"
NAME = "bench-xh"
PLAYBOOKS = {"A": HERE / "cross_host/a.toml", "B": HERE / "cross_host/b.toml"}
APP_DIR = {"A": "/opt/xh-a", "B": "/opt/xh-b"}
SECRETS = ["db_password", "cache_password", "api_token"]
RAW = REPO / "target" / f"{NAME}-events"


def same_work():
    """B is A plus `source = "data"` on the three secrets (and its own name and directory)."""
    strip = lambda t: [l for l in t.splitlines() if l and not l.startswith("#")]
    a = strip(PLAYBOOKS["A"].read_text())
    b = strip(PLAYBOOKS["B"].read_text().replace("xh-bench-b", "xh-bench-a").replace("/opt/xh-b", "/opt/xh-a"))
    sources = [l for l in b if l == 'source = "data"']
    if [l for l in b if l != 'source = "data"'] != a or len(sources) != len(SECRETS):
        sys.exit("bench/cross_host/a.toml and b.toml differ in more than the secrets' source")
    return sum(l == "[[steps]]" for l in a)


def inventory(ld, lab):
    head = (ld / "inventory.toml").read_text()
    head = head[: head.index("[groups.")]
    head = "\n".join(l for l in head.splitlines() if not l.startswith("playbook ="))
    out = [head.rstrip(), "", "[groups.data]", "", "[groups.app]", ""]
    for i, h in enumerate(lab["hosts"]):
        group = "data" if h["name"] == DATA else "app"
        out += [f"[hosts.{h['name']}]", f'address = "{h["address"]}"', f"port = {h['port']}",
                f'groups = ["{group}"]', ""]
    inv = ld / "xh-inventory.toml"
    inv.write_text("\n".join(out))
    return inv


def claw(cmd, variant, inv, env):
    args = [str(BIN), cmd, str(inv), "--playbook", str(PLAYBOOKS[variant]), "--output", "json",
            "--forks", "256"] + (["--yes"] if cmd == "apply" else [])
    t = time.perf_counter()
    p = subprocess.run(args, text=True, capture_output=True, env=env)
    secs = time.perf_counter() - t
    events = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    RAW.mkdir(parents=True, exist_ok=True)  # every run's events, for a closer look (not committed)
    (RAW / f"{cmd}-{variant}-{len(list(RAW.glob(f'{cmd}-{variant}-*')))}.jsonl").write_text(p.stdout)
    summary = next((e for e in events if e.get("event") == "summary"), None)
    if p.returncode != 0 or summary is None:
        bad = [f"{h['host']}: {h['state']} at {h['failed_at']}: {h['error']}"
               for h in (summary or {}).get("hosts", []) if h["state"] in ("failed", "unreachable")]
        sys.exit(f"{cmd} {variant} failed ({p.returncode}):\n" + "\n".join(bad[:10]) + f"\n{p.stderr[-2000:]}")
    return secs, summary, events


def check_values(variant):
    """After converging: B's hosts all hold the data host's values, A's hosts each their own."""
    seen = {}
    for i in range(1, HOSTS + 1):
        files = [f"{APP_DIR[variant]}/.secrets/{s}" for s in SECRETS]
        out = base.sh([str(LAB), "exec", f"h{i}", "--name", NAME, "--", "cat"] + files).stdout.split()
        env = base.sh([str(LAB), "exec", f"h{i}", "--name", NAME, "--", "cat", f"{APP_DIR[variant]}/.env"]).stdout
        if len(out) != 3 or any(v not in env for v in out):
            sys.exit(f"{variant} h{i}: secrets {out} not all in its .env")
        seen[f"h{i}"] = tuple(out)
    distinct = len(set(seen.values()))
    want = 1 if variant == "B" else HOSTS
    if distinct != want:
        sys.exit(f"variant {variant}: {distinct} distinct secret sets on {HOSTS} hosts, want {want}")
    return distinct


def sshd_counts(lab, marks):
    """Connections and sessions each host's sshd logged after `marks` (byte offsets). Not
    bench/run.py's sshd_counts: that one slices the text read with newline translation by byte
    offsets, and the logs end their lines with CRLF, so its window drifts one character per line
    logged before the mark (after ~8 runs here it starts past the run's first lines)."""
    conns = sessions = 0
    for h in lab["hosts"]:
        with open(h["sshd_log"], "rb") as f:
            f.seek(marks[h["name"]])
            text = f.read()
        conns += text.count(b"Accepted publickey for")
        sessions += text.count(b"Starting session:")
    return conns, sessions


def per_host(summary, key):
    data = [h[key] for h in summary["hosts"] if h["host"] == DATA]
    app = [h[key] for h in summary["hosts"] if h["host"] != DATA]
    return {"data": data[0], "app_median": statistics.median(app), "app_max": max(app)}


def noop(variant, inv, env, lab):
    marks = {h["name"]: Path(h["sshd_log"]).stat().st_size for h in lab["hosts"]}
    secs, s, events = claw("apply", variant, inv, env)
    not_ok = [(h["host"], h["state"], h["changed"], h["handlers"]) for h in s["hosts"]
              if h["state"] != "ok" or h["changed"] or h["handlers"]]
    changed_steps = [(e["host"], e.get("name")) for e in events
                     if e.get("event") == "step" and e.get("status") not in ("ok", "skipped")]
    if not_ok or changed_steps or len(s["hosts"]) != HOSTS:
        sys.exit(f"the no-op apply of {variant} changed something: {not_ok} {changed_steps}")
    rt = sum(h["round_trips"] for h in s["hosts"])
    conns = sum(h["connections"] for h in s["hosts"])
    for _ in range(50):  # sshd writes its log lines a little after the run (later under load)
        time.sleep(0.2)
        logged = sshd_counts(lab, marks)
        if logged == (conns, rt):
            break
    if logged != (conns, rt):
        for h in lab["hosts"]:  # what sshd logged, for a closer look
            (RAW / f"sshd-{h['name']}.log").write_bytes(Path(h["sshd_log"]).read_bytes())
        (RAW / "marks.json").write_text(json.dumps(marks))
        sys.exit(f"{variant}: sshd logged {logged} (connections, sessions), the tool claims {(conns, rt)}")
    rts = sorted({h["round_trips"] for h in s["hosts"]})
    return {
        "wall_s": secs, "elapsed_ms": s["elapsed_ms"], "round_trips": rt, "connections": conns,
        "round_trips_per_host": rts, "cpu_ms": s["cpu_ms"], "peak_rss_kb": s["peak_rss_kb"],
        "host_elapsed_ms": per_host(s, "elapsed_ms"), "host_probe_ms": per_host(s, "probe_ms"),
        "host_connect_ms": per_host(s, "connect_ms"), "host_apply_ms": per_host(s, "apply_ms"),
    }


def plan(variant, inv, env):
    secs, s, _ = claw("plan", variant, inv, env)
    if any(h["changed"] for h in s["hosts"]):
        sys.exit(f"the plan of {variant} shows changes")
    return {"wall_s": secs, "round_trips": sum(h["round_trips"] for h in s["hosts"]),
            "connections": sum(h["connections"] for h in s["hosts"])}


def bench(runs):
    subprocess.run(["rm", "-rf", str(RAW)], check=True)
    base.sh([str(LAB), "up", str(HOSTS), "--name", NAME])
    try:
        ld = REPO / "target" / NAME
        lab = json.loads((ld / "lab.json").read_text())
        inv = inventory(ld, lab)
        env = dict(os.environ)
        env.pop("SSH_AUTH_SOCK", None)
        first = {}
        for v in "AB":
            secs, s, _ = claw("apply", v, inv, env)
            first[v] = {"wall_s": secs, "round_trips": sum(h["round_trips"] for h in s["hosts"]),
                        "round_trips_host": per_host(s, "round_trips"),
                        "host_elapsed_ms": per_host(s, "elapsed_ms"),
                        "changed": sum(h["changed"] for h in s["hosts"]),
                        "distinct_secret_sets": check_values(v)}
        res = {v: {"noop": [], "plan": []} for v in "AB"}
        for i in range(runs):
            for v in "AB":
                r = noop(v, inv, env, lab)
                res[v]["noop"].append(r)
                print(f"round {i + 1} {v}: no-op {r['wall_s']:.3f} s, {r['round_trips']} round trips",
                      file=sys.stderr, flush=True)
            for v in "AB":
                res[v]["plan"].append(plan(v, inv, env))
        for v in "AB":  # the values are still as converged
            check_values(v)
        return first, res
    finally:
        subprocess.run([str(LAB), "down", "--name", NAME], capture_output=True)


def markdown(first, res, meta, steps):
    f = lambda xs: f"{statistics.median(xs):.3f} s ({min(xs):.3f} / {max(xs):.3f})"
    per = lambda rs, k: statistics.median(r[k] for r in rs)
    out = [
        f"# Issue 19: no-op apply on {HOSTS} light lab hosts, with and without cross-host values", "",
        f"{meta['date']}; claw-provision {meta['commit']} (release build); {meta['machine']}, {meta['load']}. "
        f"`python3 bench/cross_host.py --hosts {HOSTS} --runs {meta['runs']}{'' if DATA == 'h1' else ' --data-host ' + DATA}` (`BENCH_BIN` = the "
        f"release binary): one light lab of {HOSTS} hosts (`tests/lab/lab.sh up {HOSTS} --name {NAME}`, 0 ms "
        f"added latency; hosts and client share the CPUs), groups `data` ({DATA}) and `app` (the {HOSTS - 1} others). "
        f"Playbooks bench/cross_host/a.toml and b.toml, the same {steps} steps (two directories, three "
        "`secret` steps, a template `.env` using the three secrets, two files, a directory, an absent "
        "directory): A, every host keeps its own secrets; B, the three secrets have `source = \"data\"` "
        f"({DATA} keeps them, the {HOSTS - 1} `app` hosts write its values). Each applied once to converge, then "
        f"{meta['runs']} rounds of no-op apply A, no-op apply B, plan A, plan B, `--forks 256 --output json`. "
        "Wall: the whole process, median (min / max). Round trips and connections: the JSON summary's, "
        "summed over hosts; every no-op run checked: every host `ok`, 0 steps changed, 0 handlers, and "
        "the connections and sessions equal what the hosts' sshd logged.", "",
        "| variant | no-op apply wall | round trips (total / per host) | connections | plan wall "
        "| plan round trips | host elapsed, data / app median / app max | CPU | first apply (converge): wall; round trips per host |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v, label in (("A", "A: own secrets"), ("B", "B: `source = \"data\"`")):
        n, p = res[v]["noop"], res[v]["plan"]
        rts = sorted({x for r in n for x in r["round_trips_per_host"]})
        he = lambda k: statistics.median(r["host_elapsed_ms"][k] for r in n)
        fr = first[v]["round_trips_host"]
        out.append(
            f"| {label} | {f([r['wall_s'] for r in n])} "
            f"| {per(n, 'round_trips'):.0f} / {'–'.join(map(str, rts))} | {per(n, 'connections'):.0f} "
            f"| {f([r['wall_s'] for r in p])} | {per(p, 'round_trips'):.0f} "
            f"| {he('data'):.0f} / {he('app_median'):.0f} / {he('app_max'):.0f} ms "
            f"| {per(n, 'cpu_ms'):.0f} ms "
            f"| {first[v]['wall_s']:.3f} s; RT data / app {fr['data']} / {fr['app_median']:g}"
            f"{'' if fr['app_max'] == fr['app_median'] else ' (max ' + str(fr['app_max']) + ')'}; "
            f"{first[v]['changed']} changes |")
    out += ["", "Per run (no-op apply wall, s): " + "; ".join(
        f"{v}: " + ", ".join(f"{r['wall_s']:.3f}" for r in res[v]["noop"]) for v in "AB"), ""]
    return "\n".join(out)


def main():
    global HOSTS, DATA
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data-host", default="h1", help="the one host of group data")
    a = ap.parse_args()
    HOSTS, DATA = a.hosts, a.data_host
    steps = same_work()
    load_before = os.getloadavg()
    first, res = bench(a.runs)
    load_after = os.getloadavg()
    version = subprocess.run([str(BIN), "--version"], text=True, capture_output=True).stdout.strip()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # the last commit that changed the product (the bench's own commits come after it)
        "commit": base.sh(["git", "-C", str(REPO), "log", "-1", "--format=%h", "--", "src", "Cargo.toml",
                           "Cargo.lock"]).stdout.strip(),
        "version": version, "machine": f"{os.cpu_count()} CPUs", "runs": a.runs, "hosts": HOSTS, "data_host": DATA,
        "load": f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_before)} before, "
                f"{'/'.join(f'{x:.1f}' for x in load_after)} after",
    }
    out = REPO / "bench/results"
    stem = f"issue19-cross-host-noop-{HOSTS}" + ("" if DATA == "h1" else f"-data-{DATA}")
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "first": first, "results": res}, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(first, res, meta, steps))
    print((out / f"{stem}.md").read_text())


HOSTS, DATA = 20, "h1"
if __name__ == "__main__":
    main()
