//! A real etcd cluster for the store's tests: Debian's etcd, one member per namespace of the
//! "fabric" testbed (`PREFIX-e1..e3`, 192.168.77.21-23), data in the test's temporary
//! directory, every member killed on drop.

use crate::Bed;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running etcd cluster (three members, or one serving TLS only).
pub struct Etcd {
    p: String,
    dir: PathBuf,
    members: Vec<Option<Child>>,
    /// With TLS: the directory of `ca.crt`, `server.*` and `client.*` (client certificates
    /// required).
    tls: Option<PathBuf>,
    size: usize,
}

/// Makes a CA, a server certificate for the members' addresses and a client certificate
/// signed by it, and another client certificate signed by a CA nobody trusts (`rogue.*`).
fn make_certs(dir: &std::path::Path) {
    let sans = (1..=3).map(|i| format!("IP:{}", member_ip(i))).collect::<Vec<_>>().join(",");
    let script = format!(
        "set -e; cd {d}
         for ca in ca rogue-ca; do
           openssl req -x509 -newkey rsa:2048 -nodes -keyout $ca.key -out $ca.crt -days 2 -subj /CN=xvs-test-$ca 2>/dev/null
         done
         printf 'subjectAltName={sans}\nextendedKeyUsage=serverAuth\n' > server.ext
         printf 'extendedKeyUsage=clientAuth\n' > client.ext
         mk() {{ openssl req -newkey rsa:2048 -nodes -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null
                openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial -out $1.crt -days 2 -extfile $3 2>/dev/null; }}
         mk server ca server.ext; mk client ca client.ext; mk rogue rogue-ca client.ext",
        d = dir.display()
    );
    let ok = Command::new("sh").arg("-c").arg(script).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "making test certificates with openssl failed");
}

/// The client address of member `i` (1..=3).
pub fn member_ip(i: usize) -> String {
    format!("192.168.77.2{i}")
}

impl Etcd {
    /// Starts three members and waits until the cluster is healthy.
    pub fn start(bed: &Bed) -> Etcd {
        for tool in ["etcd", "etcdctl"] {
            let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
            assert!(
                found.map(|o| o.status.success()).unwrap_or(false),
                "the etcd tests need `{tool}` (Debian's etcd-server and etcd-client); run ./scripts/setup.sh"
            );
        }
        Etcd::start_with(bed, 3, false)
    }

    /// One member that serves clients over TLS only and requires a client certificate
    /// signed by its CA (`tls_dir()` holds `ca.crt`, `client.crt`/`.key`, and `rogue.*`, a
    /// client certificate from another CA).
    pub fn start_tls(bed: &Bed) -> Etcd {
        Etcd::start_with(bed, 1, true)
    }

    fn start_with(bed: &Bed, size: usize, tls: bool) -> Etcd {
        let dir = bed.path("etcd");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tls = tls.then(|| {
            let t = dir.join("tls");
            std::fs::create_dir_all(&t).unwrap();
            make_certs(&t);
            t
        });
        let mut e = Etcd { p: bed.p.clone(), dir, members: vec![None, None, None], tls, size };
        for i in 1..=size {
            e.launch(i);
        }
        e.wait_healthy(size, Duration::from_secs(30));
        e
    }

    /// The certificates of a TLS cluster.
    pub fn tls_dir(&self) -> Option<&std::path::Path> {
        self.tls.as_deref()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn launch(&mut self, i: usize) {
        let ip = member_ip(i);
        let cluster: Vec<String> = (1..=self.size).map(|j| format!("e{j}=http://{}:2380", member_ip(j))).collect();
        let log = std::fs::File::create(self.dir.join(format!("e{i}.log"))).unwrap();
        let s = self.scheme();
        let mut cmd = Command::new("ip");
        if let Some(t) = &self.tls {
            cmd.env("ETCD_CERT_FILE", t.join("server.crt"))
                .env("ETCD_KEY_FILE", t.join("server.key"))
                .env("ETCD_TRUSTED_CA_FILE", t.join("ca.crt"))
                .env("ETCD_CLIENT_CERT_AUTH", "true");
        }
        let child = cmd
            .args(["netns", "exec", &format!("{}-e{i}", self.p), "etcd"])
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("e{i}")))
            .args(["--listen-client-urls", &format!("{s}://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("{s}://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{ip}:2380")])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", &self.p])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i - 1] = Some(child);
    }

    /// `etcd://` URL of every member.
    pub fn url(&self) -> String {
        format!("etcd://{}", (1..=self.size).map(|i| format!("{}:2379", member_ip(i))).collect::<Vec<_>>().join(","))
    }

    /// Runs etcdctl (from the fabric namespace) against the live members.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let s = self.scheme();
        let eps: Vec<String> = (1..=self.size)
            .filter(|i| self.members[i - 1].is_some())
            .map(|i| format!("{s}://{}:2379", member_ip(i)))
            .collect();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("{}-fab", self.p), "timeout", "10", "etcdctl"]);
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.join("ca.crt").display()))
                .arg(format!("--cert={}", t.join("client.crt").display()))
                .arg(format!("--key={}", t.join("client.key").display()));
        }
        cmd.arg(format!("--endpoints={}", eps.join(",")))
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl")
    }

    /// Like [`Etcd::ctl`], failing the test when it fails; its standard output.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "etcdctl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits until `n` members answer as healthy.
    pub fn wait_healthy(&self, n: usize, limit: Duration) {
        let t = Instant::now();
        loop {
            let o = self.ctl(&["endpoint", "health"]);
            let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
            if text.matches("is healthy").count() >= n {
                return;
            }
            assert!(t.elapsed() < limit, "etcd did not become healthy: {text}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Kills member `i` (SIGKILL, as a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i);
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        (1..=3)
            .map(|i| {
                let t = std::fs::read_to_string(self.dir.join(format!("e{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                format!("--- e{i}:\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 1..=3 {
            self.kill(i);
        }
    }
}
