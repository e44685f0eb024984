//! `--stats` and the JSON summary's cost figures (issue 7): per host connections, channels,
//! round trips, bytes and time in connect / probe / apply; for the run wall time, CPU time and
//! peak memory. What the tool counts is checked against what sshd logged.

use crate::support::{Lab, claw, log_len, repo, sshd_counts};

#[test]
fn stats_per_host_and_for_the_run() {
    let lab = Lab::up("t-stats", 2);
    let pb = repo().join("playbooks/demo.toml");
    let inv = lab.write_inventory("stats.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    let marks: Vec<usize> = lab.hosts().iter().map(|h| log_len(&h.sshd_log)).collect();
    let r = claw(&["apply", inv, "--yes", "--output", "json"], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(200));
    for (i, h) in lab.hosts().iter().enumerate() {
        let s = r.host(&h.name);
        let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
        assert!(
            n("connect_ms") > 0 && n("probe_ms") > 0 && n("apply_ms") > 0,
            "{s}"
        );
        assert!(
            n("connect_ms") + n("probe_ms") + n("apply_ms") <= n("elapsed_ms") + 1,
            "{s}"
        );
        assert!(n("bytes_sent") > 0 && n("bytes_received") > 0, "{s}");
        let (conns, sessions) = sshd_counts(&h.sshd_log, marks[i]);
        assert_eq!((conns, sessions as u64), (1, n("round_trips")), "{s}");
        assert_eq!(n("channels"), n("round_trips"));
    }
    let sum = r.summary();
    assert!(sum["peak_rss_kb"].as_u64().unwrap() > 1000, "{sum}");
    assert!(sum["cpu_ms"].as_u64().is_some(), "{sum}");

    let t = claw(&["plan", inv, "--stats"], &[]);
    assert_eq!(t.code, 0, "{}\n{}", t.stdout, t.stderr);
    let head = t
        .stdout
        .lines()
        .find(|l| l.starts_with("HOST") && l.contains("CONNECT"))
        .unwrap_or_else(|| panic!("{}", t.stdout));
    for col in [
        "CONN", "CHAN", "RT", "SENT", "RECEIVED", "PROBE", "APPLY", "TOTAL",
    ] {
        assert!(head.contains(col), "{head}");
    }
    let h1 = t
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("h1 "))
        .unwrap_or_else(|| panic!("{}", t.stdout));
    let cols: Vec<&str> = h1.split_whitespace().collect();
    assert_eq!(
        &cols[1..4],
        ["1", "1", "1"],
        "a plan is one connection, one round trip: {h1}"
    );
    assert!(
        t.stdout
            .lines()
            .any(|l| l.starts_with("run: 2 hosts, wall ") && l.contains("peak memory")),
        "{}",
        t.stdout
    );
}
