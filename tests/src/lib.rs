//! Helpers for the system tests: the namespace testbed (scripts/testbed.sh) with a per-test
//! prefix and guaranteed teardown, commands inside namespaces with time limits, and xvsd
//! processes that are always stopped.

pub mod etcd;
pub mod vm;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The xvsd binary (built by scripts/test.sh before the system tests).
pub fn xvsd_bin() -> PathBuf {
    std::env::var_os("XVSD").map(PathBuf::from).unwrap_or_else(|| root().join("target/release/xvsd"))
}

/// The xvsctl binary.
pub fn xvsctl_bin() -> PathBuf {
    root().join("target/release/xvsctl")
}

/// Fails the test, saying why, when it cannot run here (never skips silently).
pub fn require_system() {
    // SAFETY-free: geteuid has no preconditions; read via `id -u` to avoid unsafe code.
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(uid.as_deref().unwrap_or(""), "0", "system tests need root (network namespaces, XDP, AF_XDP)");
    for tool in ["ip", "ethtool", "iperf3", "tcpdump", "python3", "timeout"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success());
        assert!(found.unwrap_or(false), "system tests need `{tool}`; run ./scripts/setup.sh");
    }
    for b in [xvsd_bin(), xvsctl_bin()] {
        assert!(b.exists(), "{} missing: run `cargo build --release --bins` first", b.display());
    }
}

/// A testbed with a unique prefix; torn down on drop, also when the test fails.
pub struct Bed {
    /// Name prefix of every namespace and interface.
    pub p: String,
    tmp: PathBuf,
}

impl Bed {
    /// Brings the standard topology up; `peer` is "xvs" or "kernel" (host 2's VTEP).
    pub fn up(tag: &str, peer: &str) -> Bed {
        Bed::up_with_queues(tag, peer, 1)
    }

    /// Like [`Bed::up`], with `queues` queues on every veth.
    pub fn up_with_queues(tag: &str, peer: &str, queues: u32) -> Bed {
        require_system();
        let p = format!("x{tag}{}", std::process::id() % 1000);
        assert!(p.len() <= 9, "prefix {p} too long for interface names");
        let tmp = std::env::temp_dir().join(format!("xvs-{p}"));
        let _ = std::fs::create_dir_all(&tmp);
        let bed = Bed { p, tmp };
        let out = Command::new(root().join("scripts/testbed.sh"))
            .args(["up", &bed.p, peer])
            .env("XVS_QUEUES", queues.to_string())
            .output()
            .expect("testbed.sh");
        assert!(out.status.success(), "testbed up failed: {}", String::from_utf8_lossy(&out.stderr));
        bed
    }

    /// A file path in this test's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Runs `cmd` in namespace `{p}-{n}` with a time limit.
    pub fn run(&self, n: &str, secs: u32, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &format!("{}-{n}", self.p), "timeout", &secs.to_string(), "sh", "-c", cmd])
            .output()
            .expect("ip netns exec")
    }

    /// ICMP echo requests the stack of namespace `vm` has received (`InEchos`).
    pub fn echo_requests_in(&self, vm: &str) -> u64 {
        let text = self.ok(vm, 5, "cat /proc/net/snmp");
        let mut lines = text.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        let i = names.split_whitespace().position(|n| n == "InEchos").expect("InEchos");
        values.split_whitespace().nth(i).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Like [`Bed::run`], failing the test with the output when `cmd` fails.
    pub fn ok(&self, n: &str, secs: u32, cmd: &str) -> String {
        let o = self.run(n, secs, cmd);
        assert!(
            o.status.success(),
            "in {n}: `{cmd}` failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The xvsd config for host `h` (1 or 2) from testbed.sh.
    pub fn config(&self, h: u8) -> String {
        self.config_cores(h, "1")
    }

    /// The xvsd config for host `h` with forwarding cores `cores` (e.g. "0, 1").
    pub fn config_cores(&self, h: u8, cores: &str) -> String {
        let out = Command::new(root().join("scripts/testbed.sh"))
            .args(["config", &self.p, &h.to_string(), cores])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// The xvsd config for host `h` whose VM ports are the taps `{p}-t1`..`t4` of real VMs.
    pub fn config_taps(&self, h: u8) -> String {
        let out = Command::new(root().join("scripts/testbed.sh"))
            .args(["config", &self.p, &h.to_string(), "1", "tap"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// Control socket of host `h`'s xvsd.
    pub fn socket(&self, h: u8) -> PathBuf {
        self.path(&format!("h{h}.sock"))
    }

    /// State file of host `h`'s xvsd.
    pub fn state(&self, h: u8) -> PathBuf {
        self.path(&format!("h{h}-state.toml"))
    }

    /// Runs xvsctl against host `h`'s xvsd: (exit code, stdout, stderr).
    pub fn ctl(&self, h: u8, args: &[&str]) -> (i32, String, String) {
        let o = Command::new("timeout")
            .arg("30")
            .arg(xvsctl_bin())
            .arg("--socket")
            .arg(self.socket(h))
            .args(args)
            .output()
            .expect("xvsctl");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Like [`Bed::ctl`], failing the test unless it succeeds; returns stdout.
    pub fn ctl_ok(&self, h: u8, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(h, args);
        assert_eq!(code, 0, "xvsctl {args:?} failed: {err}");
        out
    }

    /// `xvsctl --json` parsed.
    pub fn ctl_json(&self, h: u8, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ctl_ok(h, &a)).expect("JSON from xvsctl")
    }

    /// `xvsctl --json` read as the control protocol's reply type `T` (`xvs_proto::reply`):
    /// a reply that does not fit its type fails the test.
    pub fn ctl_reply<T: serde::de::DeserializeOwned>(&self, h: u8, args: &[&str]) -> T {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(h, &a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("xvsctl {args:?}: {e}: {out}"))
    }

    /// Starts xvsd on host `h` with `config` (and a fresh state file), waiting until it
    /// forwards.
    pub fn xvsd(&self, h: u8, config: &str) -> Xvsd {
        let _ = std::fs::remove_file(self.state(h));
        let _ = std::fs::remove_file(self.state(h).with_extension("journal"));
        self.xvsd_keep_state(h, config)
    }

    /// Starts xvsd on host `h`, keeping whatever state file is there (a restart).
    pub fn xvsd_keep_state(&self, h: u8, config: &str) -> Xvsd {
        self.xvsd_with(h, config, &[])
    }

    /// Starts xvsd on host `h` with a fresh state file and `extra` arguments.
    pub fn xvsd_args(&self, h: u8, config: &str, extra: &[&str]) -> Xvsd {
        let _ = std::fs::remove_file(self.state(h));
        let _ = std::fs::remove_file(self.state(h).with_extension("journal"));
        self.xvsd_with(h, config, extra)
    }

    fn xvsd_with(&self, h: u8, config: &str, extra: &[&str]) -> Xvsd {
        self.xvsd_on_cpus(h, config, extra, None)
    }

    /// Starts xvsd on host `h` (fresh state) allowed to run only on `cpus` (`taskset -c`),
    /// as a service pinned by its unit or an operator would be.
    pub fn xvsd_taskset(&self, h: u8, config: &str, cpus: &str) -> Xvsd {
        let _ = std::fs::remove_file(self.state(h));
        let _ = std::fs::remove_file(self.state(h).with_extension("journal"));
        self.xvsd_on_cpus(h, config, &[], Some(cpus))
    }

    fn xvsd_on_cpus(&self, h: u8, config: &str, extra: &[&str], cpus: Option<&str>) -> Xvsd {
        let cfg = self.path(&format!("h{h}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let stats = self.path(&format!("h{h}.json"));
        let _ = std::fs::remove_file(&stats);
        let log = std::fs::File::create(self.path(&format!("h{h}.log"))).unwrap();
        let mut cmd = match cpus {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", c, "ip"]);
                t
            }
            None => Command::new("ip"),
        };
        let child = cmd
            .args(["netns", "exec", &format!("{}-h{h}", self.p)])
            .arg(xvsd_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--stats-file")
            .arg(&stats)
            .arg("--socket")
            .arg(self.socket(h))
            .arg("--state")
            .arg(self.state(h))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn xvsd");
        let mut x = Xvsd { child: Some(child), stats, log: self.path(&format!("h{h}.log")) };
        let t = Instant::now();
        while !x.stats.exists() {
            if let Ok(Some(st)) = x.child.as_mut().unwrap().try_wait() {
                panic!("xvsd on h{h} exited ({st}): {}", x.log_text());
            }
            assert!(t.elapsed() < Duration::from_secs(15), "xvsd on h{h} did not start: {}", x.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        x
    }

    /// Number of XDP programs attached to interfaces in namespace `n`.
    pub fn xdp_attached(&self, n: &str) -> usize {
        let o = self.run(n, 10, "ip -d link show");
        String::from_utf8_lossy(&o.stdout).matches("prog/xdp").count()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/testbed.sh")).args(["down", &self.p]).output();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// A running xvsd; killed on drop if still running.
pub struct Xvsd {
    child: Option<Child>,
    stats: PathBuf,
    log: PathBuf,
}

impl Xvsd {
    /// Its latest published counters and status.
    pub fn stats(&self) -> Value {
        for _ in 0..20 {
            if let Ok(Ok(v)) = std::fs::read_to_string(&self.stats).map(|t| serde_json::from_str::<Value>(&t)) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cannot read {}", self.stats.display());
    }

    /// Its latest published counters and status, as the control protocol's type.
    pub fn snapshot(&self) -> xvs_proto::reply::Snapshot {
        let v = self.stats();
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("stats file: {e}: {v}"))
    }

    /// Waits for the counters to be refreshed (they are written every 200 ms).
    pub fn fresh_stats(&self) -> Value {
        std::thread::sleep(Duration::from_millis(500));
        self.stats()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the daemon without letting it clean up (SIGKILL).
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.success();
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Xvsd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sum of one drop reason over all ports of a stats snapshot.
pub fn drops(stats: &Value, reason: &str) -> u64 {
    stats["stats"]["ports"]
        .as_array()
        .map_or(0, |ports| ports.iter().map(|p| p["drops"][reason].as_u64().unwrap_or(0)).sum())
}

/// Counter of a port by interface name.
pub fn port_counter(stats: &Value, ifname: &str, field: &str) -> u64 {
    port_stats(stats, ifname)[field].as_u64().unwrap_or(0)
}

/// Port `ifname`'s drops for `reason` in a stats snapshot.
pub fn port_drop(stats: &Value, ifname: &str, reason: &str) -> u64 {
    port_stats(stats, ifname)["drops"][reason].as_u64().unwrap_or(0)
}

fn port_stats<'a>(stats: &'a Value, ifname: &str) -> &'a Value {
    let names = stats["ports"].as_array().expect("ports");
    let i = names.iter().position(|p| p["name"] == ifname).unwrap_or_else(|| panic!("no port {ifname}"));
    &stats["stats"]["ports"][i]
}
