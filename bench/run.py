#!/usr/bin/env python3
"""claw-provision benchmark (issue 7): wall time of plan, first apply and no-op apply of the
claw-ai playbook on N light lab hosts, with 0 or more ms of one-way latency, against the floor of
N parallel OpenSSH `ssh host true` (default settings) on the same hosts. Run it through
bench/run.sh (it builds the release binary and installs the lab's needs).

Per (N, delay) it brings up a lab, applies once (the first apply, fresh hosts), then repeats the
no-op apply, the plan and the floor RUNS times each (median, min, max), and cross-checks the
connections and sessions a no-op apply claims with what the hosts' sshd logged. Writes
bench/results/latest.json and bench/results/latest.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("BENCH_BIN", REPO / "target/release/claw-provision"))
LAB = REPO / "tests/lab/lab.sh"
PLAYBOOK = REPO / "playbooks/claw-ai.toml"
KEYS = {"ZHIPUAI_API_KEY": "bench-zhipu", "PINECONE_API_KEY": "bench-pinecone"}


def sh(args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw)


def timed(args, env=None):
    t = time.perf_counter()
    p = subprocess.run(args, text=True, capture_output=True, env=env)
    return time.perf_counter() - t, p


def claw(cmd, inv, env, forks=256):
    args = [str(BIN), cmd, str(inv), "--playbook", str(PLAYBOOK), "--output", "json", "--forks", str(forks)]
    if cmd == "apply":
        args.append("--yes")
    secs, p = timed(args, env)
    summary = next((json.loads(l) for l in p.stdout.splitlines() if '"event":"summary"' in l), None)
    if p.returncode != 0:
        bad = [f"{h['host']}: {h['state']} at {h['failed_at']}: {h['error']}"
               for h in (summary or {}).get("hosts", []) if h["state"] in ("failed", "unreachable")]
        sys.exit(f"{cmd} failed ({p.returncode}):\n" + "\n".join(bad[:10]) + f"\n{p.stderr[-1000:]}")
    return secs, summary


def floor(cfg, hosts):
    # N parallel OpenSSH connections, default settings (only the lab's config: address, key,
    # known_hosts), each running `true`.
    t = time.perf_counter()
    procs = [subprocess.Popen(["ssh", "-F", str(cfg), h, "true"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for h in hosts]
    bad = [p for p in procs if p.wait() != 0]
    if bad:
        sys.exit(f"ssh failed: {bad[0].stderr.read().decode()[-500:]}")
    return time.perf_counter() - t


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


def sshd_counts(lab, marks):
    conns = sessions = 0
    for h in lab["hosts"]:
        # Bytes: the marks are byte offsets (read as text, the logs' CRLF would become LF and
        # the window would drift by a character per line logged before the mark).
        text = Path(h["sshd_log"]).read_bytes()[marks[h["name"]]:]
        conns += text.count(b"Accepted publickey for")
        sessions += text.count(b"Starting session:")
    return conns, sessions


def bench(n, delay, runs, name):
    up = [str(LAB), "up", str(n), "--name", name] + (["--delay", str(delay)] if delay else [])
    sh(up)
    try:
        ld = REPO / "target" / name
        inv, cfg = ld / "inventory.toml", ld / "ssh_config"
        lab = json.loads((ld / "lab.json").read_text())
        hosts = [h["name"] for h in lab["hosts"]]
        env = dict(os.environ, **KEYS)
        env.pop("SSH_AUTH_SOCK", None)
        # The first apply with the default --forks (20): hosts and client share this machine's
        # CPUs, and 200 concurrent first applies starve every sshd of the lab.
        first, s = claw("apply", inv, env, forks=20)
        first_rt = sum(h["round_trips"] for h in s["hosts"])
        # what the first apply changed per host: steps, and handlers run
        first_changed = sum(h["changed"] + len(h["handlers"]) for h in s["hosts"])
        noop, plan, ssh, cpu, rss = [], [], [], [], []
        for i in range(runs):
            marks = {h["name"]: Path(h["sshd_log"]).stat().st_size for h in lab["hosts"]}
            secs, s = claw("apply", inv, env)
            noop.append(secs)
            cpu.append(s["cpu_ms"])
            rss.append(s["peak_rss_kb"])
            changed = [h["host"] for h in s["hosts"] if h["state"] != "ok"]
            if changed:
                sys.exit(f"the no-op apply changed something on {changed}")
            rt = sum(h["round_trips"] for h in s["hosts"])
            claimed_conns = sum(h["connections"] for h in s["hosts"])
            time.sleep(0.3)
            logged = sshd_counts(lab, marks)
            if logged != (claimed_conns, rt):
                sys.exit(f"sshd logged {logged} (connections, sessions), the tool claims {(claimed_conns, rt)}")
            plan.append(claw("plan", inv, env)[0])
            ssh.append(floor(cfg, hosts))
        return {
            "hosts": n, "delay_ms": delay,
            "first_apply_s": first, "first_apply_round_trips_per_host": first_rt / n,
            "first_apply_changes_per_host": first_changed / n,
            "noop_apply_s": stats(noop), "plan_s": stats(plan), "ssh_true_s": stats(ssh),
            "noop_round_trips_per_host": rt / n, "noop_connections_per_host": claimed_conns / n,
            "noop_cpu_ms_per_host": statistics.median(cpu) / n,
            "peak_rss_mb": max(rss) / 1024,
        }
    finally:
        subprocess.run([str(LAB), "down", "--name", name], capture_output=True)


def markdown(results, meta):
    out = [
        "# claw-provision benchmark", "",
        f"{meta['date']}, commit {meta['commit']}, {meta['machine']}; {meta['runs']} runs each "
        "(median, min–max); playbook `playbooks/claw-ai.toml` on light lab hosts (the steps that "
        "need Docker are skipped there). Latency: one-way, through tests/lab/delay-proxy.py. The "
        "lab's hosts run on the same CPUs as the client. First apply: once, fresh hosts, default "
        "`--forks 20`; the others: `--forks 256` (all hosts at once, like the N parallel ssh).", "",
        "| hosts | delay | first apply | no-op apply | plan | N × `ssh host true` | no-op / ssh | plan / ssh "
        "| RT/host (no-op) | RT/host (first) | changes/host (first) | CPU/host (no-op) | peak mem |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    f = lambda s: f"{s['median']:.3f} s ({s['min']:.3f}–{s['max']:.3f})"
    for r in results:
        out.append(
            f"| {r['hosts']} | {r['delay_ms']} ms | {r['first_apply_s']:.3f} s | {f(r['noop_apply_s'])} "
            f"| {f(r['plan_s'])} | {f(r['ssh_true_s'])} "
            f"| {r['noop_apply_s']['median'] / r['ssh_true_s']['median']:.2f}× "
            f"| {r['plan_s']['median'] / r['ssh_true_s']['median']:.2f}× "
            f"| {r['noop_round_trips_per_host']:.1f} | {r['first_apply_round_trips_per_host']:.1f} "
            f"| {r.get('first_apply_changes_per_host', 0):.1f} "
            f"| {r['noop_cpu_ms_per_host']:.1f} ms | {r['peak_rss_mb']:.1f} MB |")
    out += ["", "The sshd logs of every no-op run were checked: connections and sessions equal what "
            "claw-provision reports (connections, round trips). Changes (first apply): changed "
            "steps plus handlers run; a first apply also makes one round trip for the probe, one "
            "for the audit record and one more for each \"known after apply\" step it probes again.",
            ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1 20 200")
    ap.add_argument("--delays", default="0 25")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    results = []
    for n in map(int, a.sizes.split()):
        for d in map(int, a.delays.split()):
            print(f"bench: {n} hosts, {d} ms ...", file=sys.stderr, flush=True)
            r = bench(n, d, a.runs, "bench")
            print(f"bench: {n} hosts, {d} ms: no-op {r['noop_apply_s']['median']:.3f} s, "
                  f"ssh {r['ssh_true_s']['median']:.3f} s", file=sys.stderr, flush=True)
            results.append(r)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).stdout.strip(),
        "machine": f"{os.cpu_count()} CPUs", "runs": a.runs,
    }
    out = REPO / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    (out / "latest.md").write_text(markdown(results, meta))
    print((out / "latest.md").read_text())


if __name__ == "__main__":
    main()
