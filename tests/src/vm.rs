//! Real VMs for the system tests: qemu-system-x86 under TCG (this machine kind has no usable
//! KVM) with Debian's kernel and a busybox initramfs built by `tests/vm/build-guest.sh`, its
//! NIC a virtio-net device on a tap exactly as qemu makes it by default (`vnet_hdr` on, so the
//! guest offloads checksums and TCP segmentation). The test drives the guest through its
//! serial console: one shell command at a time, its output read up to a marker.

use crate::root;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Builds the guest (once; later calls find it cached) and returns its directory.
pub fn guest_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("xvs-guest");
    let o = Command::new(root().join("tests/vm/build-guest.sh")).arg(&dir).output().expect("build-guest.sh");
    assert!(o.status.success(), "building the test guest failed: {}", String::from_utf8_lossy(&o.stderr));
    for f in ["vmlinuz", "initrd.gz"] {
        assert!(dir.join(f).exists(), "guest {f} missing in {}", dir.display());
    }
    let q = Command::new("sh").args(["-c", "command -v qemu-system-x86_64"]).output().map(|o| o.status.success());
    assert!(q.unwrap_or(false), "real-VM tests need qemu-system-x86_64; run ./scripts/setup.sh");
    dir
}

/// qemu's tap up- and down-script and the environment they read.
pub type TapScripts = (PathBuf, PathBuf, Vec<(String, String)>);

/// How a guest is started.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Network namespace qemu runs in (its tap is created there).
    pub netns: String,
    /// Tap name.
    pub tap: String,
    /// Guest MAC.
    pub mac: String,
    /// Guest IPv4 address with prefix length.
    pub ip: String,
    /// Guest name (its TCP 7000 banner answers with it).
    pub name: String,
    /// Where the serial socket and the qemu log go.
    pub dir: PathBuf,
    /// qemu's tap scripts (`script=`, `downscript=`) and the environment they read; none:
    /// `script=no,downscript=no`.
    pub scripts: Option<TapScripts>,
}

/// A running qemu guest; killed on drop.
pub struct Guest {
    /// How it was started.
    pub spec: GuestSpec,
    child: Option<Child>,
    conn: Option<UnixStream>,
    buf: Vec<u8>,
    seq: u32,
}

impl Guest {
    /// Starts qemu (returns at once; [`Guest::wait_up`] waits for the boot).
    pub fn start(spec: GuestSpec, images: &Path) -> Guest {
        let sock = spec.dir.join(format!("{}.serial", spec.tap));
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::File::create(spec.dir.join(format!("{}.qemu.log", spec.tap))).expect("qemu log");
        let append = format!("console=ttyS0 quiet loglevel=1 panic=-1 xvs.ip={} xvs.name={}", spec.ip, spec.name);
        let (netdev, env) = match &spec.scripts {
            Some((up, down, env)) => (
                format!("tap,id=n0,ifname={},script={},downscript={}", spec.tap, up.display(), down.display()),
                env.clone(),
            ),
            None => (format!("tap,id=n0,ifname={},script=no,downscript=no", spec.tap), Vec::new()),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &spec.netns, "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nodefaults"])
            .args(["-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(images.join("vmlinuz"))
            .arg("-initrd")
            .arg(images.join("initrd.gz"))
            .args(["-append", &append])
            .args(["-chardev", &format!("socket,id=c0,path={},server=on,wait=off", sock.display())])
            .args(["-serial", "chardev:c0"])
            // The NIC exactly as qemu makes it by default: a tap with vnet_hdr, virtio-net.
            .args(["-netdev", &netdev])
            .envs(env)
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={}", spec.mac)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn qemu");
        let mut g = Guest { spec, child: Some(child), conn: None, buf: Vec::new(), seq: 0 };
        // Connect at once: what the guest prints with no client on its serial socket is lost.
        g.connect(Duration::from_secs(30));
        g
    }

    fn connect(&mut self, timeout: Duration) {
        let t = Instant::now();
        let sock = self.spec.dir.join(format!("{}.serial", self.spec.tap));
        while self.conn.is_none() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("qemu for {} exited ({st}): {}", self.spec.name, self.log());
            }
            assert!(t.elapsed() < timeout, "no serial console from {}: {}", self.spec.name, self.log());
            match UnixStream::connect(&sock) {
                Ok(c) => self.conn = Some(c),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.spec.dir.join(format!("{}.qemu.log", self.spec.tap))).unwrap_or_default()
    }

    /// Waits (bounded) until the guest has booted and configured its NIC.
    pub fn wait_up(&mut self, timeout: Duration) {
        let t = Instant::now();
        self.connect(timeout);
        let marker = format!("XVS-GUEST-UP {}", self.spec.name);
        let left = timeout.saturating_sub(t.elapsed());
        self.read_until(&marker, left).unwrap_or_else(|got| {
            panic!("{} did not boot within {timeout:?}; console:\n{got}\nqemu: {}", self.spec.name, self.log())
        });
        // The console shell greets with a banner: let it pass before the first real command.
        let _ = self.sh("true", 10);
    }

    /// Reads the console until `marker`; returns what came before it (or, on timeout, all).
    fn read_until(&mut self, marker: &str, timeout: Duration) -> Result<String, String> {
        let t = Instant::now();
        let conn = self.conn.as_mut().expect("connected");
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(at) = find(&self.buf, marker.as_bytes()) {
                let before = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + marker.len());
                return Ok(before);
            }
            let left = timeout.saturating_sub(t.elapsed());
            if left.is_zero() {
                return Err(String::from_utf8_lossy(&self.buf).into_owned());
            }
            conn.set_read_timeout(Some(left.min(Duration::from_millis(500)))).expect("timeout");
            match conn.read(&mut chunk) {
                Ok(0) => return Err(format!("console closed: {}", String::from_utf8_lossy(&self.buf))),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    /// Runs `cmd` in the guest's shell (bounded by `secs`, also inside the guest); returns its
    /// exit status and output.
    pub fn sh(&mut self, cmd: &str, secs: u32) -> (i32, String) {
        self.seq += 1;
        let tag = format!("XVS-DONE-{}", self.seq);
        let line = format!("timeout {secs} sh -c '{}' 2>&1; echo \"{tag} $?\"\n", cmd.replace('\'', "'\\''"));
        self.buf.clear();
        self.conn.as_mut().expect("guest is up").write_all(line.as_bytes()).expect("serial write");
        let out = self
            .read_until(&format!("{tag} "), Duration::from_secs(u64::from(secs) + 30))
            .unwrap_or_else(|got| panic!("{}: `{cmd}` did not finish: {got}", self.spec.name));
        let rest = self.read_until("\n", Duration::from_secs(5)).unwrap_or_default();
        let code = rest.trim().parse().unwrap_or(-1);
        (code, out.replace('\r', ""))
    }

    /// Like [`Guest::sh`], failing the test unless `cmd` succeeds; returns its output.
    pub fn ok(&mut self, cmd: &str, secs: u32) -> String {
        let (code, out) = self.sh(cmd, secs);
        assert_eq!(code, 0, "in guest {}: `{cmd}` failed ({code}):\n{out}", self.spec.name);
        out
    }

    /// A counter of the guest's TCP stack from /proc/net/snmp (`InCsumErrors`, `RetransSegs`).
    pub fn tcp_counter(&mut self, name: &str) -> u64 {
        snmp(&self.ok("cat /proc/net/snmp", 10), "Tcp:", name)
    }

    /// A counter of the guest's ICMP stack from /proc/net/snmp (`InDestUnreachs`).
    pub fn icmp_counter(&mut self, name: &str) -> u64 {
        snmp(&self.ok("cat /proc/net/snmp", 10), "Icmp:", name)
    }

    /// Stops qemu the way a VM manager does (SIGTERM: qemu runs its down-script) and waits.
    pub fn stop(&mut self) -> bool {
        self.conn = None;
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Kills qemu (the VM stops; its tap disappears with it).
    pub fn kill(&mut self) {
        self.conn = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One counter from /proc/net/snmp text: the header line and the value line share `prefix`.
pub fn snmp(text: &str, prefix: &str, name: &str) -> u64 {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    let (Some(h), Some(v)) = (lines.first(), lines.get(1)) else { return u64::MAX };
    let i = h.split_whitespace().position(|x| x == name);
    i.and_then(|i| v.split_whitespace().nth(i)).and_then(|x| x.parse().ok()).unwrap_or(u64::MAX)
}

/// Receiver-side Mbit/s from iperf3's text summary (`... receiver`).
pub fn iperf_mbits(out: &str) -> f64 {
    let Some(line) = out.lines().rev().find(|l| l.contains("receiver")) else { return 0.0 };
    let w: Vec<&str> = line.split_whitespace().collect();
    let Some(i) = w.iter().position(|x| x.ends_with("bits/sec")) else { return 0.0 };
    let v: f64 = w.get(i.wrapping_sub(1)).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    match w[i] {
        "Gbits/sec" => v * 1000.0,
        "Mbits/sec" => v,
        "Kbits/sec" => v / 1000.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_snmp_and_iperf() {
        let snmp = "Tcp: RtoAlgorithm InSegs InCsumErrors\nTcp: 1 2055 3\nUdp: x\n";
        assert_eq!(super::snmp(snmp, "Tcp:", "InCsumErrors"), 3);
        assert_eq!(super::snmp(snmp, "Tcp:", "Nope"), u64::MAX);
        let ip = "[  5]   0.00-5.01   sec   292 MBytes   489 Mbits/sec                  receiver\n";
        assert_eq!(super::iperf_mbits(ip), 489.0);
        assert_eq!(super::iperf_mbits("[ 5] 0-5 sec 1 GBytes 1.21 Gbits/sec receiver"), 1210.0);
    }
}
