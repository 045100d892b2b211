//! Where the desired configuration is kept. Everything goes through [`Store`]; the embedded
//! default is a local file written atomically. A distributed store can implement the same
//! trait later without any other code assuming a file.

use crate::config::{Config, StaticFdbConfig};
use crate::types::parse_mac;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A small change recorded without rewriting the whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// Static FDB entries added or replaced in a tenant (MACs normalised).
    FdbAdd {
        /// Tenant name.
        tenant: String,
        /// (MAC, VTEP) pairs.
        entries: Vec<(String, IpAddr)>,
    },
    /// Static FDB entries removed from a tenant.
    FdbDel {
        /// Tenant name.
        tenant: String,
        /// MACs.
        macs: Vec<String>,
    },
}

impl Record {
    /// Applies the record to `cfg` (unknown tenants and MACs are ignored: the record was
    /// validated when it was made).
    pub fn apply(&self, cfg: &mut Config) {
        match self {
            // MACs compare as addresses, not as text: a file may write `0A` or `-`.
            Record::FdbAdd { tenant, entries } => {
                if let Some(t) = cfg.tenants.iter_mut().find(|t| t.name == *tenant) {
                    for (mac, vtep) in entries {
                        let m = parse_mac(mac).ok();
                        match t.fdb.iter_mut().find(|f| parse_mac(&f.mac).ok() == m) {
                            Some(f) => (f.mac, f.vtep) = (mac.clone(), *vtep),
                            None => t.fdb.push(StaticFdbConfig { mac: mac.clone(), vtep: *vtep }),
                        }
                    }
                }
            }
            Record::FdbDel { tenant, macs } => {
                if let Some(t) = cfg.tenants.iter_mut().find(|t| t.name == *tenant) {
                    let gone: Vec<_> = macs.iter().filter_map(|m| parse_mac(m).ok()).collect();
                    t.fdb.retain(|f| parse_mac(&f.mac).map_or(true, |m| !gone.contains(&m)));
                }
            }
        }
    }
}

/// Durable storage of the desired configuration.
pub trait Store: Send {
    /// The stored configuration, if any (with every logged record applied).
    fn load(&self) -> anyhow::Result<Option<Config>>;
    /// Stores `cfg` durably as the whole state; returns only once it would survive a crash.
    fn save(&mut self, cfg: &Config) -> anyhow::Result<()>;
    /// Stores one small change durably on top of the last saved state. `current` gives the
    /// configuration with the change applied, for stores that compact now and then.
    fn log(&mut self, record: &Record, current: &mut dyn FnMut() -> Config) -> anyhow::Result<()>;
    /// Where it is, for status.
    fn describe(&self) -> String;
}

/// A TOML file, replaced atomically (temporary file, fsync, rename, fsync of the directory),
/// plus a journal of small changes beside it (one JSON line each, fdatasync'd), folded into
/// the file every [`FileStore::COMPACT_EVERY`] records.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    journal: Option<std::fs::File>,
    records: usize,
}

impl FileStore {
    /// Records after which the journal is folded into the file.
    pub const COMPACT_EVERY: usize = 4096;

    /// A store at `path` (its directory is created when needed).
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore { path: path.into(), journal: None, records: 0 }
    }

    fn journal_path(&self) -> PathBuf {
        self.path.with_extension("journal")
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for FileStore {
    fn load(&self) -> anyhow::Result<Option<Config>> {
        let mut cfg = match std::fs::read_to_string(&self.path) {
            Ok(text) => Config::from_toml(&text).with_context(|| format!("state file {}", self.path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading state file {}", self.path.display())),
        };
        if let Ok(text) = std::fs::read_to_string(self.journal_path()) {
            for line in text.lines() {
                // A torn last line (crash mid-append) was never acknowledged: stop there.
                let Ok(r) = serde_json::from_str::<Record>(line) else { break };
                r.apply(&mut cfg);
            }
        }
        Ok(Some(cfg))
    }

    fn save(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(cfg.to_toml().as_bytes())?;
            f.sync_all().context("fsync of the state file")?;
        }
        std::fs::rename(&tmp, &self.path).with_context(|| format!("renaming to {}", self.path.display()))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).context("fsync of the state directory")?;
        // The file now holds everything: start an empty journal.
        let j = std::fs::File::create(self.journal_path()).context("truncating the state journal")?;
        j.sync_all()?;
        self.journal = None;
        self.records = 0;
        Ok(())
    }

    fn log(&mut self, record: &Record, current: &mut dyn FnMut() -> Config) -> anyhow::Result<()> {
        if self.records >= Self::COMPACT_EVERY || !self.path.exists() {
            return self.save(&current());
        }
        if self.journal.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.journal_path())
                .with_context(|| format!("opening {}", self.journal_path().display()))?;
            self.journal = Some(f);
        }
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let j = self.journal.as_mut().expect("opened above");
        j.write_all(&line).context("appending to the state journal")?;
        j.sync_data().context("fdatasync of the state journal")?;
        self.records += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_replaces_atomically() {
        let dir = std::env::temp_dir().join(format!("xvs-store-{}", std::process::id()));
        let mut s = FileStore::new(dir.join("state.toml"));
        assert!(s.load().unwrap().is_none());
        let cfg = Config::from_toml(
            "[uplink]\ninterface = \"u\"\nvtep_ip = \"10.1.1.1\"\n[[tenant]]\nname = \"a\"\nvni = 5\n",
        )
        .unwrap();
        s.save(&cfg).unwrap();
        assert_eq!(s.load().unwrap(), Some(cfg.clone()));
        assert!(!dir.join("state.tmp").exists(), "no temporary file left");
        // journaled changes survive a reload; a torn last line is ignored
        let add = Record::FdbAdd {
            tenant: "a".into(),
            entries: vec![("02:00:00:00:00:09".into(), "10.1.1.2".parse().unwrap())],
        };
        let mut expect = cfg.clone();
        add.apply(&mut expect);
        s.log(&add, &mut || expect.clone()).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("state.journal"))
            .unwrap()
            .write_all(b"{\"op\":\"fdb_d")
            .unwrap();
        assert_eq!(s.load().unwrap(), Some(expect.clone()));
        let del = Record::FdbDel { tenant: "a".into(), macs: vec!["02:00:00:00:00:09".into()] };
        let mut fresh = FileStore::new(dir.join("state.toml"));
        fresh.save(&expect).unwrap();
        let mut after = expect.clone();
        del.apply(&mut after);
        fresh.log(&del, &mut || after.clone()).unwrap();
        assert_eq!(fresh.load().unwrap(), Some(after));
        std::fs::write(dir.join("state.toml"), "garbage = [").unwrap();
        assert!(s.load().unwrap_err().to_string().contains("state file"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
