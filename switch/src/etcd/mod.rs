//! The desired state of many hosts in etcd (`xvsd --store etcd://host:port,...`): the
//! [`Store`] behind which the control plane writes, and the watch that programs this host's
//! tables from what the other hosts and orchestrators wrote. The key schema and everything
//! pure about it is in [`schema`]; `docs/etcd.md` documents both.
//!
//! One tokio runtime (two threads) runs the session with etcd: it registers this host under a
//! lease, reads the keys of the tenants it carries, watches them, and hands each new derived
//! configuration to the control plane (the `apply` callback), which plans and carries it out
//! as it would a command. Writes from xvsctl come in through [`Store::save`] as one etcd
//! transaction that compares every key it changes against the revision this host last
//! applied. When etcd cannot be reached, forwarding goes on with the last applied state
//! (also cached in the local state file, for a restart), writes are refused naming the
//! store, and the session reconnects and resumes its watch from the last revision (or, if
//! etcd compacted it, reads everything again and applies the difference).
//!
//! May depend on: config, store (the trait and the file cache), schema; etcd-client, tokio.
//! Never on control or daemon (the control plane comes in as a callback).

pub mod schema;

use crate::config::Config;
use crate::store::{FileStore, Record, Store};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    Txn, TxnOp, WatchOptions,
};
use schema::{Event, HostLive, Keys, View, Write, canonical};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Longest a single request to etcd may take before the change is refused.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Default lease of a host's liveness key, seconds.
pub const DEFAULT_LEASE_SECS: u32 = 5;
/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/xvs";

/// Where the store is and who this host is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://host:port` of every member given.
    pub endpoints: Vec<String>,
    /// The URL as given (for messages).
    pub url: String,
    /// Key prefix.
    pub prefix: String,
    /// This host's name in the store.
    pub host: String,
    /// Lease of its liveness key.
    pub lease_secs: u32,
    /// TLS: the CA certificate and, optionally, the client certificate and key (PEM bytes).
    pub tls: Option<Tls>,
}

/// TLS material, read when the settings are made (so a missing file is named at start).
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    /// The CA that signed the members' certificates.
    pub ca: Vec<u8>,
    /// This host's certificate and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        write!(f, "Tls {{ ca: {} bytes, client certificate: {} }}", self.ca.len(), self.identity.is_some())
    }
}

impl Tls {
    /// Reads the files; `cert` and `key` go together.
    pub fn read(ca: &str, cert: Option<&str>, key: Option<&str>) -> Result<Tls, String> {
        let read = |what: &str, p: &str| std::fs::read(p).map_err(|e| format!("store {what} {p:?}: {e}"));
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read("client certificate", c)?, read("client key", k)?)),
            (None, None) => None,
            _ => return Err("store: a client certificate needs its key, and a key its certificate".into()),
        };
        Ok(Tls { ca: read("CA certificate", ca)?, identity })
    }
}

impl Settings {
    /// Parses `etcd://host:port[,host:port...]`.
    pub fn parse(url: &str, prefix: &str, host: &str, lease_secs: u32) -> Result<Settings, String> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| format!("store {url:?}: expected etcd://host:port"))?;
        let mut endpoints = Vec::new();
        for m in rest.trim_end_matches('/').split(',') {
            let (h, p) = m.rsplit_once(':').ok_or_else(|| format!("store {url:?}: member {m:?} has no :port"))?;
            if h.is_empty() || p.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!("store {url:?}: member {m:?} is not host:port"));
            }
            endpoints.push(format!("http://{m}"));
        }
        if !prefix.starts_with('/') || prefix.contains("//") {
            return Err(format!("store prefix {prefix:?}: must start with / (for example /xvs)"));
        }
        crate::config::check_name(host).map_err(|_| format!("host name {host:?}: 1..=64 of A-Z a-z 0-9 _ . -"))?;
        if !(1..=3600).contains(&lease_secs) {
            return Err(format!("lease {lease_secs} s: must be 1..=3600"));
        }
        Ok(Settings {
            endpoints,
            url: url.to_string(),
            prefix: prefix.to_string(),
            host: host.to_string(),
            lease_secs,
            tls: None,
        })
    }

    /// The same over TLS: members are reached over https and checked against `tls.ca`.
    pub fn with_tls(mut self, tls: Tls) -> Settings {
        for e in &mut self.endpoints {
            *e = e.replacen("http://", "https://", 1);
        }
        self.tls = Some(tls);
        self
    }
}

/// How the session with etcd is doing, for `status`.
#[derive(Debug, Clone, Default)]
struct Health {
    connected: bool,
    last_error: Option<String>,
    /// Why the last derived configuration was not applied, if it was not.
    refused: Option<String>,
    resyncs: u64,
    reconnects: u64,
}

/// What the session and the store share.
struct Shared {
    settings: Settings,
    keys: Keys,
    /// This host's own settings (uplink, daemon), with no tenants or ports.
    local: Config,
    /// The view as the watch keeps it.
    live: Mutex<View>,
    /// The view the running configuration was derived from, and that configuration: writes
    /// compare on these revisions.
    applied: Mutex<(View, Config)>,
    client: Mutex<Option<Client>>,
    health: Mutex<Health>,
    lease: Mutex<Option<i64>>,
    /// The last applied configuration, for a restart while etcd is away.
    cache: Mutex<FileStore>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes a new derived configuration: plans and carries it out, calls the second argument
/// once it is live (under the same lock as writes, so they compare on what runs), and returns
/// why not if it was refused.
pub type Apply = Box<dyn FnMut(Config, &mut dyn FnMut()) -> Result<(), String> + Send>;

/// The etcd store. Clones share one session.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl EtcdStore {
    /// A store for `settings`; `local` gives this host's uplink and daemon settings, `cache`
    /// the file that keeps the last applied configuration. Does not connect yet.
    pub fn new(settings: Settings, local: &Config, cache: FileStore) -> anyhow::Result<EtcdStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("xvs-etcd")
            .enable_all()
            .build()?;
        let local = Config { tenants: vec![], ports: vec![], ..local.clone() };
        let keys = Keys::new(&settings.prefix);
        Ok(EtcdStore {
            shared: Arc::new(Shared {
                keys,
                applied: Mutex::new((View::default(), local.clone())),
                local,
                settings,
                live: Mutex::new(View::default()),
                client: Mutex::new(None),
                health: Mutex::new(Health::default()),
                lease: Mutex::new(None),
                cache: Mutex::new(cache),
            }),
            rt: Arc::new(rt),
        })
    }

    /// Reads this host's state from etcd (within `wait`): the configuration to start with.
    /// If etcd cannot be reached, the last configuration cached, or none.
    pub fn initial(&self, wait: Duration) -> anyhow::Result<Config> {
        let sh = Arc::clone(&self.shared);
        let got = self.rt.block_on(async move {
            tokio::time::timeout(wait, async {
                let mut c = connect(&sh.settings).await?;
                full_sync(&sh, &mut c).await?;
                *lock(&sh.client) = Some(c);
                lock(&sh.health).connected = true;
                Ok::<_, String>(())
            })
            .await
            .map_err(|_| format!("no answer within {} s", wait.as_secs()))?
        });
        let sh = &self.shared;
        match got {
            Ok(()) => {
                let v = lock(&sh.live).clone();
                let cfg = canonical(v.derive(&sh.local, &sh.settings.host));
                *lock(&sh.applied) = (v, cfg.clone());
                Ok(cfg)
            }
            Err(e) => {
                tracing::warn!("store {}: {e}; starting from the last state cached here", sh.settings.url);
                lock(&sh.health).last_error = Some(e);
                let cached = lock(&sh.cache).load()?.map(|c| Config { uplink: sh.local.uplink.clone(), ..c });
                let cfg = canonical(cached.unwrap_or_else(|| sh.local.clone()));
                lock(&sh.applied).1 = cfg.clone();
                Ok(cfg)
            }
        }
    }

    /// Starts the session: registration under the lease, the watch, reconnection. Every new
    /// derived configuration goes to `apply`.
    pub fn start(&self, apply: Apply) {
        let sh = Arc::clone(&self.shared);
        self.rt.spawn(session(sh, apply));
    }

    /// Gives the lease back, so the other hosts forget this one now (at shutdown).
    pub fn stop(&self) {
        let sh = Arc::clone(&self.shared);
        let lease = lock(&sh.lease).take();
        let client = lock(&sh.client).clone();
        if let (Some(id), Some(mut c)) = (lease, client) {
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(id)).await });
        }
    }

    fn unreachable(&self, why: &str) -> anyhow::Error {
        anyhow::anyhow!("store {} is unreachable ({why}); nothing was changed", self.shared.settings.url)
    }

    /// Names the key of `w` another writer changed since this host saw it.
    async fn conflict(sh: &Shared, c: &mut Client, w: &Write) -> String {
        let url = &sh.settings.url;
        let strip = |k: &str| k.strip_prefix(sh.keys.root()).unwrap_or(k).to_string();
        for k in &w.absent {
            if let Ok(r) = c.get(k.as_str(), None).await
                && let Some(kv) = r.kvs().first()
            {
                let v = String::from_utf8_lossy(kv.value());
                let v: String = v.chars().take(200).collect();
                return format!("{} already exists in store {url} (revision {}): {v}", strip(k), kv.mod_revision());
            }
        }
        for k in &w.present {
            if let Ok(r) = c.get(k.as_str(), None).await
                && r.kvs().is_empty()
            {
                return format!("{} does not exist in store {url}", strip(k));
            }
        }
        for (k, rev) in &w.at {
            if let Ok(r) = c.get(k.as_str(), None).await {
                let now = r.kvs().first().map_or(0, |kv| kv.mod_revision());
                if now != *rev {
                    return format!(
                        "{} was changed by another writer (revision {now}, this host applied {rev}); \
                         retry once the change reached this host",
                        strip(k)
                    );
                }
            }
        }
        format!("another writer changed store {url} meanwhile")
    }
}

impl Store for EtcdStore {
    fn load(&self) -> anyhow::Result<Option<Config>> {
        Ok(Some(lock(&self.shared.applied).1.clone()))
    }

    fn save(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let sh = Arc::clone(&self.shared);
        let (me, keys) = (&sh.settings.host, &sh.keys);
        let cfg = canonical(cfg.clone());
        let w = {
            let a = lock(&sh.applied);
            a.0.plan_write(keys, me, &a.1, &cfg).map_err(|e| anyhow::anyhow!("{e}"))?
        };
        if !w.is_empty() {
            let mut c = lock(&sh.client)
                .clone()
                .ok_or_else(|| self.unreachable(lock(&sh.health).last_error.as_deref().unwrap_or("not connected")))?;
            let r = self.rt.block_on(async {
                let mut w = w.clone();
                // A tenant the store already has with the same spec: join it (once).
                for attempt in 0..2 {
                    match tokio::time::timeout(REQUEST_TIMEOUT, c.txn(txn_of(&w))).await {
                        Err(_) => return Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
                        Ok(Err(e)) => return Err(e.to_string()),
                        Ok(Ok(r)) if r.succeeded() => return Ok(Ok((r.header().map_or(0, |h| h.revision()), w))),
                        Ok(Ok(_)) => {}
                    }
                    if attempt == 0
                        && let Some(j) = joined(&sh, &mut c, &w).await
                    {
                        w = j;
                        continue;
                    }
                    break;
                }
                Ok(Err(EtcdStore::conflict(&sh, &mut c, &w).await))
            });
            let (rev, w) = match r {
                Err(e) => return Err(self.unreachable(&e)),
                Ok(Err(conflict)) => anyhow::bail!("conflict: {conflict}; nothing was applied"),
                Ok(Ok(done)) => done,
            };
            lock(&sh.live).wrote(keys, me, &w, rev);
            let mut a = lock(&sh.applied);
            a.0.wrote(keys, me, &w, rev);
        }
        lock(&sh.applied).1 = cfg.clone();
        if let Err(e) = lock(&sh.cache).save(&cfg) {
            tracing::warn!("caching the state locally: {e:#}");
        }
        Ok(())
    }

    fn log(&mut self, _: &Record, _: &mut dyn FnMut() -> Config) -> anyhow::Result<()> {
        anyhow::bail!(
            "with store {} a tenant's static FDB entries follow the store's ports and hosts",
            self.shared.settings.url
        )
    }

    fn describe(&self) -> String {
        let sh = &self.shared;
        let h = lock(&sh.health).clone();
        let v = lock(&sh.live);
        let mut s = format!(
            "{}{} (prefix {}, host {}, lease {} s): {}, revision {}, {} tenant(s) carried, {} host(s) alive",
            sh.settings.url,
            match &sh.settings.tls {
                Some(Tls { identity: Some(_), .. }) => " over TLS with a client certificate",
                Some(_) => " over TLS",
                None => "",
            },
            sh.keys.root(),
            sh.settings.host,
            sh.settings.lease_secs,
            if h.connected { "connected" } else { "unreachable" },
            v.revision,
            v.carried.len(),
            v.alive.len()
        );
        if !h.connected
            && let Some(e) = &h.last_error
        {
            s.push_str(&format!("; last error: {e}"));
        }
        if let Some(e) = &h.refused {
            s.push_str(&format!("; store state not fully applied: {e}"));
        }
        if !v.bad.is_empty() {
            let keys: Vec<_> = v.bad.keys().map(|k| k.strip_prefix(sh.keys.root()).unwrap_or(k)).collect();
            s.push_str(&format!("; malformed keys ignored: {}", keys.join(", ")));
        }
        if h.reconnects > 0 || h.resyncs > 0 {
            s.push_str(&format!("; reconnects {}, full resyncs {}", h.reconnects, h.resyncs));
        }
        s
    }

    fn distributed(&self) -> Option<String> {
        Some(self.shared.settings.url.clone())
    }
}

/// The transaction of a write: every compare, then every delete and put.
fn txn_of(w: &Write) -> Txn {
    let mut cmp = Vec::new();
    cmp.extend(w.absent.iter().map(|k| Compare::create_revision(k.as_str(), CompareOp::Equal, 0)));
    cmp.extend(w.present.iter().map(|k| Compare::create_revision(k.as_str(), CompareOp::Greater, 0)));
    cmp.extend(w.at.iter().map(|(k, r)| Compare::mod_revision(k.as_str(), CompareOp::Equal, *r)));
    let mut ops: Vec<TxnOp> = w.deletes.iter().map(|k| TxnOp::delete(k.as_str(), None)).collect();
    ops.extend(w.puts.iter().map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)));
    Txn::new().when(cmp).and_then(ops)
}

/// `w` as a join of every tenant it creates that the store already has with the same spec
/// (and VNI owner), if there is one.
async fn joined(sh: &Shared, c: &mut Client, w: &Write) -> Option<Write> {
    let mut out: Option<Write> = None;
    for (t, spec) in &w.created {
        let got = c.get(sh.keys.spec(t), None).await.ok()?;
        let Some(kv) = got.kvs().first() else { continue };
        let theirs: schema::TenantSpec = serde_json::from_slice(kv.value()).ok()?;
        if theirs != *spec {
            continue;
        }
        let v = c.get(sh.keys.vni(spec.vni), None).await.ok()?;
        let vkv = v.kvs().first()?;
        if serde_json::from_slice::<String>(vkv.value()).ok()? != *t {
            continue;
        }
        out = Some(out.as_ref().unwrap_or(w).join(&sh.keys, t, spec.vni, kv.mod_revision(), vkv.mod_revision()));
    }
    out
}

async fn connect(s: &Settings) -> Result<Client, String> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(t) = &s.tls {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&t.ca));
        if let Some((cert, key)) = &t.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    }
    let c = tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&s.endpoints, Some(opts)))
        .await
        .map_err(|_| "no member answered".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(c)
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Err(_) => Err(format!("{what}: no answer within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
    }
}

/// Reads every key this host watches at one revision into a fresh view.
async fn full_sync(sh: &Shared, c: &mut Client) -> Result<(), String> {
    let (keys, me) = (&sh.keys, sh.settings.host.as_str());
    let mut v = View::default();
    let alive = timed("reading hosts", c.get(keys.alive_all(), Some(GetOptions::new().with_prefix()))).await?;
    let rev = alive.header().map_or(0, |h| h.revision());
    let at = |p: bool| {
        let o = GetOptions::new().with_revision(rev);
        if p { o.with_prefix() } else { o }
    };
    let carried = timed("reading carried tenants", c.get(keys.carried(me), Some(at(true)))).await?;
    let mut events: Vec<Event> = Vec::new();
    for kv in alive.kvs().iter().chain(carried.kvs()) {
        events.push(Event::Put { key: kv.key().to_vec(), value: kv.value().to_vec(), rev: kv.mod_revision() });
    }
    for e in &events {
        v.apply(keys, me, e);
    }
    v.at_revision(rev);
    // This host's own writes newer than the read (a tenant it just joined) count as read.
    {
        let live = lock(&sh.live);
        v.keep_floors(keys, me, &live);
    }
    let tenants: Vec<String> = v.carried.iter().cloned().collect();
    for t in tenants {
        let r = timed("reading a tenant", c.get(keys.tenant(&t), Some(at(true)))).await?;
        for kv in r.kvs() {
            v.apply(
                keys,
                me,
                &Event::Put { key: kv.key().to_vec(), value: kv.value().to_vec(), rev: kv.mod_revision() },
            );
        }
    }
    let mut live = lock(&sh.live);
    v.keep_floors(keys, me, &live);
    *live = v;
    Ok(())
}

/// Registers this host under a new lease; returns the lease and a receiver that yields when
/// the lease is lost.
async fn register(sh: &Arc<Shared>, c: &mut Client) -> Result<(i64, tokio::sync::oneshot::Receiver<String>), String> {
    let ttl = i64::from(sh.settings.lease_secs);
    let lease = timed("granting the lease", c.lease_grant(ttl, None)).await?.id();
    let vtep = sh.local.vtep_cidr().map_err(|e| e.to_string())?.0;
    let value = serde_json::to_string(&HostLive { vtep_ip: vtep }).expect("plain data");
    let key = sh.keys.alive(&sh.settings.host);
    timed("registering this host", c.put(key, value, Some(PutOptions::new().with_lease(lease)))).await?;
    let (mut keeper, mut stream) = timed("keeping the lease", c.lease_keep_alive(lease)).await?;
    let old = lock(&sh.lease).replace(lease);
    if let Some(old) = old {
        let mut c = c.clone();
        tokio::spawn(async move { tokio::time::timeout(REQUEST_TIMEOUT, c.lease_revoke(old)).await });
    }
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    let every = Duration::from_millis(u64::from(sh.settings.lease_secs) * 1000 / 3).max(Duration::from_millis(200));
    tokio::spawn(async move {
        let why = loop {
            if let Err(e) = keeper.keep_alive().await {
                break format!("keeping the lease: {e}");
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => break "the lease expired".to_string(),
                Ok(Ok(None)) => break "the lease's stream ended".to_string(),
                Ok(Err(e)) => break format!("keeping the lease: {e}"),
                Err(_) => break "the lease's keepalive got no answer".to_string(),
            }
            tokio::time::sleep(every).await;
        };
        let _ = lost_tx.send(why);
    });
    Ok((lease, lost_rx))
}

/// The session with etcd, for the daemon's life: (re)connects, registers, watches, applies.
async fn session(sh: Arc<Shared>, mut apply: Apply) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let existing = if first { lock(&sh.client).clone() } else { None };
        first = false;
        let c = match existing {
            Some(c) => Ok(c),
            None => connect(&sh.settings).await,
        };
        let r = match c {
            Ok(mut c) => {
                // (connected only once etcd answered: a channel opens before any handshake)
                *lock(&sh.client) = Some(c.clone());
                run(&sh, &mut c, &mut apply, &mut backoff).await
            }
            Err(e) => Err(e),
        };
        let e = r.err().unwrap_or_else(|| "the session ended".into());
        {
            let mut h = lock(&sh.health);
            if h.connected {
                tracing::warn!("store {}: {e}; forwarding goes on with the last state, reconnecting", sh.settings.url);
                h.reconnects += 1;
            }
            h.connected = false;
            h.last_error = Some(e);
        }
        *lock(&sh.client) = None;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Hands the live view's configuration to the control plane if it differs from the running
/// one; either way the view's revisions become the ones writes compare on.
fn publish(sh: &Shared, apply: &mut Apply) {
    let v = lock(&sh.live).clone();
    let derived = canonical(v.derive(&sh.local, &sh.settings.host));
    // Validated as the daemon will (the uplink's own MAC and MTU are checked there).
    let mtu = sh.local.uplink.mtu.or(Some(1500));
    let check = |c: &Config| {
        let mac = Some(crate::wire::MacAddr([2, 0, 0, 0, 0, 1]));
        c.build(mac, mtu).map(|_| ()).map_err(|e| e.to_string())
    };
    let running = lock(&sh.applied).1.clone();
    let (cfg, left_out) = schema::admissible(derived, &running, check);
    let note = (!left_out.is_empty()).then(|| {
        let parts: Vec<String> = left_out.iter().map(|(t, e)| format!("tenant {t:?} left out: {e}")).collect();
        parts.join("; ")
    });
    if let Some(n) = &note {
        tracing::warn!("store {}: {n}", sh.settings.url);
    }
    {
        let mut a = lock(&sh.applied);
        if a.1 == cfg {
            a.0 = v;
            // what the store says (less what is left out) is what runs
            lock(&sh.health).refused = note;
            return;
        }
    }
    let r = tokio::task::block_in_place(|| {
        apply(cfg.clone(), &mut || {
            *lock(&sh.applied) = (v.clone(), cfg.clone());
        })
    });
    match r {
        Ok(()) => {
            lock(&sh.health).refused = note;
            if let Err(e) = lock(&sh.cache).save(&cfg) {
                tracing::warn!("caching the state locally: {e:#}");
            }
        }
        Err(e) => {
            tracing::warn!("store {}: the state there is not applied: {e}", sh.settings.url);
            lock(&sh.health).refused = Some(e);
        }
    }
}

/// One connected session: register, read (if needed), watch until something breaks.
async fn run(sh: &Arc<Shared>, c: &mut Client, apply: &mut Apply, backoff: &mut Duration) -> Result<(), String> {
    let (_lease, mut lost) = register(sh, c).await?;
    lock(&sh.health).connected = true;
    *backoff = Duration::from_millis(100);
    let (keys, me) = (&sh.keys, sh.settings.host.as_str());
    let mut need_sync = lock(&sh.live).revision == 0;
    loop {
        if need_sync {
            // (every way out of the watch below that comes back here sets it again)
            full_sync(sh, c).await?;
        }
        publish(sh, apply);
        let (from, carried) = {
            let v = lock(&sh.live);
            (v.revision + 1, v.carried.clone())
        };
        let opts = || Some(WatchOptions::new().with_prefix().with_start_revision(from));
        let mut w = timed("watching", c.watch(keys.alive_all(), opts())).await?;
        w.watch(keys.carried(me), opts()).await.map_err(|e| e.to_string())?;
        for t in &carried {
            w.watch(keys.tenant(t), opts()).await.map_err(|e| e.to_string())?;
        }
        loop {
            let msg = tokio::select! {
                m = w.message() => m.map_err(|e| format!("watch: {e}"))?,
                why = &mut lost => return Err(why.unwrap_or_else(|_| "the lease keeper stopped".into())),
            };
            let Some(resp) = msg else { return Err("the watch ended".into()) };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    tracing::info!(
                        "store {}: revision {from} was compacted; reading everything again",
                        sh.settings.url
                    );
                    lock(&sh.health).resyncs += 1;
                    need_sync = true;
                    break;
                }
                return Err(format!("watch cancelled: {}", resp.cancel_reason()));
            }
            let rev = resp.header().map_or(0, |h| h.revision());
            let mut changed = false;
            {
                let mut v = lock(&sh.live);
                for e in resp.events() {
                    let Some(kv) = e.kv() else { continue };
                    let ev = match e.event_type() {
                        EventType::Put => {
                            Event::Put { key: kv.key().to_vec(), value: kv.value().to_vec(), rev: kv.mod_revision() }
                        }
                        EventType::Delete => Event::Delete { key: kv.key().to_vec(), rev: kv.mod_revision() },
                    };
                    changed |= v.apply(keys, me, &ev);
                }
                if !resp.events().is_empty() {
                    v.at_revision(rev);
                }
            }
            // Carried tenants changed (by an event, or by this host's own write, which the
            // view took before its event came): read the new ones and watch them too.
            if changed || lock(&sh.live).carried != carried {
                need_sync = true;
                break;
            }
            if !resp.events().is_empty() {
                publish(sh, apply);
            }
        }
    }
}
