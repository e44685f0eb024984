//! The old side of a plan's diff is read back from the host after the probe. An account owning
//! the managed directory can swap the file in between (here: a PATH shim for `wc`, which only
//! the diff's read-back runs, bound over /usr/local/sbin inside the light host's mount
//! namespace) for a link to a file only root may read. What is read back then is not the file
//! the probe hashed: it is never shown (text, JSON), and the plan says no more than "update".

use crate::support::{Lab, Scratch, claw};

fn exec(lab: &Lab, script: &str) -> String {
    let o = lab.exec("h1", &["sh", "-c", script]);
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn a_file_swapped_before_the_diff_read_back_is_never_shown() {
    let lab = Lab::up("diff-swap", 1);
    let canary = format!("canary-{:016x}: root only", rand::random::<u64>());
    exec(
        &lab,
        &format!(
            "id differ >/dev/null 2>&1 || useradd -M -s /bin/sh differ
             install -d -o differ -g differ -m 0755 /srv/diffswap
             printf 'old content\\n' > /srv/diffswap/conf && chown differ: /srv/diffswap/conf
             printf '%s\\n' '{canary}' > /root/diff-canary && chmod 0600 /root/diff-canary
             mkdir -p /opt/diffshim && : > /opt/diffshim.log"
        ),
    );
    // The shim: as `differ`, swap the managed file for a link to root's canary, then be `wc`.
    let shim = "#!/bin/sh\n\
        setpriv --reuid=differ --regid=differ --clear-groups sh -c \
        'cd /srv/diffswap && rm -f conf && ln -s /root/diff-canary conf' >> /opt/diffshim.log 2>&1\n\
        echo swapped >> /opt/diffshim.log\n\
        exec /usr/bin/wc \"$@\"\n";
    exec(
        &lab,
        &format!(
            "printf '%s' {} > /opt/diffshim/wc && chmod 755 /opt/diffshim/wc
             mount --bind /opt/diffshim /usr/local/sbin",
            quote(shim)
        ),
    );
    let s = Scratch::new();
    let pb = s.file(
        "pb.toml",
        "name = \"diff\"\nhosts = \"h1\"\n\n[[steps]]\nname = \"conf\"\nkind = \"file\"\n\
         path = \"/srv/diffswap/conf\"\ncontent = \"new content\\n\"\nowner = \"differ\"\nmode = \"0644\"\n",
    );
    let inv = lab.write_inventory("inv.toml", &pb, &[]);
    let inv = inv.to_str().unwrap();
    for args in [vec!["plan", inv], vec!["plan", inv, "--output", "json"]] {
        exec(
            &lab,
            "cd /srv/diffswap && rm -f conf && printf 'old content\\n' > conf && chown differ: conf",
        );
        let r = claw(&args, &[("NO_COLOR", "1")]);
        let out = format!("{}{}", r.stdout, r.stderr);
        let log = exec(&lab, "cat /opt/diffshim.log");
        assert!(log.contains("swapped"), "the shim ran: {log}\n{out}");
        assert!(!out.contains("panicked"), "{out}");
        assert!(out.contains("conf"), "the step is planned: {out}");
        assert!(
            // The read-back takes as many bytes as the old file had (12): the canary's start.
            !out.contains(&canary[..12]) && !out.contains("root only"),
            "the swapped-in file was shown:\n{out}"
        );
    }
    // The canary is root's, unchanged.
    assert_eq!(
        exec(
            &lab,
            "stat -c '%a %U' /root/diff-canary && cat /root/diff-canary"
        ),
        format!("600 root\n{canary}\n")
    );
}
