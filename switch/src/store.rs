//! Where the desired configuration is kept. Everything goes through [`Store`]; the embedded
//! default is a local file written atomically. A distributed store can implement the same
//! trait (`etcd`) without any other code assuming a file.
//!
//! May depend on: config (the configuration and its `Record`); files only.

use crate::config::Config;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::config::Record;

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
    /// The shared store's address, when many hosts share the state (then a tenant's VTEPs
    /// and static FDB entries follow the store, not commands).
    fn distributed(&self) -> Option<String> {
        None
    }
}

/// A TOML file, replaced atomically (temporary file, fsync, rename, fsync of the directory),
/// plus a journal of small changes beside it (one line each, fdatasync'd), folded into the
/// file every [`FileStore::COMPACT_EVERY`] records.
///
/// Crash consistency rests on generations. Each save writes the next generation number into
/// the file's first line; each journal line carries the generation it applies to and a CRC32
/// of its record. Loading applies only lines of the file's generation whose checksum holds,
/// so a crash between the rename and the journal's reset cannot replay old records onto new
/// state, and a torn append is never taken. A journal line is appended only while this store
/// knows the journal to be clean (it saved since it was opened, and no append failed since);
/// otherwise the change goes in a full save, which starts a new generation.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    journal: Option<std::fs::File>,
    records: usize,
    /// The generation of the file as this store last wrote it.
    generation: u64,
    /// Whether the journal holds only whole lines of `generation` (set by a save).
    clean: bool,
    faults: Faults,
}

/// Crash injection for tests: the store "dies" at its `at`-th I/O step (a torn write writes
/// half its bytes first), and every later step fails as well.
#[derive(Debug, Default)]
struct Faults {
    at: Option<usize>,
    steps: usize,
}

impl Faults {
    /// One I/O step: `Ok(true)` at the injected crash's step (the caller crashes there, a
    /// write after writing half), `Err` at every step after it.
    fn step(&mut self) -> std::io::Result<bool> {
        let n = self.steps;
        self.steps += 1;
        match self.at {
            Some(at) if n > at => Err(std::io::Error::other("injected crash")),
            Some(at) => Ok(n == at),
            None => Ok(false),
        }
    }
}

const HEADER: &str = "# xvs state, generation ";

/// The generation in a state file's first line (0 for a file from before generations).
fn generation_of(text: &str) -> u64 {
    text.lines().next().and_then(|l| l.strip_prefix(HEADER)).and_then(|g| g.trim().parse().ok()).unwrap_or(0)
}

/// A journal line: generation, CRC32 of the record's JSON, the JSON.
fn journal_line(generation: u64, record: &Record) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_string(record)?;
    Ok(format!("{generation} {:08x} {json}\n", crc32fast::hash(json.as_bytes())).into_bytes())
}

/// The record of a journal line, if it is whole, of `generation` and its checksum holds.
fn parse_journal_line(line: &str, generation: u64) -> Option<Record> {
    let (g, rest) = line.split_once(' ')?;
    let (crc, json) = rest.split_once(' ')?;
    if g.parse::<u64>().ok()? != generation || u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(json.as_bytes()) {
        return None;
    }
    serde_json::from_str(json).ok()
}

impl FileStore {
    /// Records after which the journal is folded into the file.
    pub const COMPACT_EVERY: usize = 4096;

    /// A store at `path` (its directory is created when needed).
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: path.into(),
            journal: None,
            records: 0,
            generation: 0,
            clean: false,
            faults: Faults::default(),
        }
    }

    fn journal_path(&self) -> PathBuf {
        self.path.with_extension("journal")
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` as one I/O step (a crash there writes half of them).
    fn write(&mut self, f: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
        if self.faults.step()? {
            f.write_all(&bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::other("injected crash (torn write)"));
        }
        f.write_all(bytes)
    }

    /// Runs `op` as one I/O step.
    fn io<T>(&mut self, op: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        if self.faults.step()? {
            return Err(std::io::Error::other("injected crash"));
        }
        op()
    }

    /// Appends one journal line. On failure the journal is cut back to where it was (part
    /// of the line may have reached the disk).
    fn append(&mut self, record: &Record) -> anyhow::Result<()> {
        let line = journal_line(self.generation, record)?;
        if self.journal.is_none() {
            let path = self.journal_path();
            let f = self
                .io(|| std::fs::OpenOptions::new().create(true).append(true).open(&path))
                .with_context(|| format!("opening {}", path.display()))?;
            self.journal = Some(f);
        }
        let mut j = self.journal.take().expect("opened above");
        let before = j.metadata().context("state journal")?.len();
        let r = self
            .write(&mut j, &line)
            .context("appending to the state journal")
            .and_then(|_| self.io(|| j.sync_data()).context("fdatasync of the state journal"));
        if r.is_err() {
            let _ = self.io(|| j.set_len(before).and_then(|_| j.sync_data()));
        }
        self.journal = Some(j);
        r
    }
}

impl Store for FileStore {
    fn load(&self) -> anyhow::Result<Option<Config>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading state file {}", self.path.display())),
        };
        let mut cfg = Config::from_toml(&text).with_context(|| format!("state file {}", self.path.display()))?;
        let generation = generation_of(&text);
        if let Ok(journal) = std::fs::read_to_string(self.journal_path()) {
            // Lines of another generation were folded into the file already (or belong to a
            // save that never finished); a line whose checksum fails was never acknowledged.
            for r in journal.lines().filter_map(|l| parse_journal_line(l, generation)) {
                r.apply(&mut cfg);
            }
        }
        Ok(Some(cfg))
    }

    fn save(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let on_disk = std::fs::read_to_string(&self.path).map_or(0, |t| generation_of(&t));
        let next = self.generation.max(on_disk) + 1;
        self.clean = false;
        self.journal = None;
        let tmp = self.path.with_extension("tmp");
        let mut f = self.io(|| std::fs::File::create(&tmp)).with_context(|| format!("writing {}", tmp.display()))?;
        let text = format!("{HEADER}{next}\n{}", cfg.to_toml());
        self.write(&mut f, text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
        self.io(|| f.sync_all()).context("fsync of the state file")?;
        drop(f);
        let path = self.path.clone();
        self.io(|| std::fs::rename(&tmp, &path)).with_context(|| format!("renaming to {}", path.display()))?;
        self.io(|| std::fs::File::open(&dir).and_then(|d| d.sync_all())).context("fsync of the state directory")?;
        // The file now holds everything (its generation makes the old journal's lines void):
        // start an empty journal.
        self.generation = next;
        let jp = self.journal_path();
        let j = self.io(|| std::fs::File::create(&jp)).context("truncating the state journal")?;
        self.io(|| j.sync_all()).context("fsync of the state journal")?;
        self.records = 0;
        self.clean = true;
        Ok(())
    }

    fn log(&mut self, record: &Record, current: &mut dyn FnMut() -> Config) -> anyhow::Result<()> {
        if !self.clean || self.records >= Self::COMPACT_EVERY || !self.path.exists() {
            return self.save(&current());
        }
        if let Err(e) = self.append(record) {
            // Append nothing more to this journal: the next change is saved whole, in a new
            // generation, whatever of this line is left on disk.
            self.clean = false;
            self.journal = None;
            return Err(e);
        }
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

    /// One step of the crash scenario: a whole save or a journaled record.
    #[allow(clippy::large_enum_variant)] // a test fixture of a few values
    enum Op {
        Save(Config),
        Log(Record),
    }

    fn fdb(op: &str, mac: &str) -> Record {
        match op {
            "add" => Record::FdbAdd { tenant: "a".into(), entries: vec![(mac.into(), "10.1.1.2".parse().unwrap())] },
            _ => Record::FdbDel { tenant: "a".into(), macs: vec![mac.into()] },
        }
    }

    fn base(vni: u32) -> Config {
        Config::from_toml(&format!(
            "[uplink]\ninterface = \"u\"\nvtep_ip = \"10.1.1.1\"\n[[tenant]]\nname = \"a\"\nvni = {vni}\n\
             vteps = [\"10.1.1.2\"]\nfdb = [{{ mac = \"02:00:00:00:00:01\", vtep = \"10.1.1.2\" }}]\n"
        ))
        .unwrap()
    }

    /// Runs `ops` on a store that crashes at I/O step `crash_at` (never, if past the end):
    /// returns the state after the last acknowledged op, the state had the failing op
    /// applied, and whether it crashed.
    fn run(dir: &Path, ops: &[Op], crash_at: Option<usize>) -> (Option<Config>, Option<Config>, bool, usize) {
        let mut s = FileStore::new(dir.join("state.toml"));
        s.faults.at = crash_at;
        let mut acked: Option<Config> = None;
        for op in ops {
            let next = match op {
                Op::Save(c) => c.clone(),
                Op::Log(r) => {
                    let mut c = acked.clone().expect("scenario starts with a save");
                    r.apply(&mut c);
                    c
                }
            };
            let res = match op {
                Op::Save(c) => s.save(c),
                Op::Log(r) => s.log(r, &mut || next.clone()),
            };
            if res.is_err() {
                return (acked, Some(next), true, s.faults.steps);
            }
            acked = Some(next);
        }
        (acked, None, false, s.faults.steps)
    }

    #[test]
    fn a_crash_at_any_write_rename_or_fsync_loses_no_acknowledged_change() {
        let ops = vec![
            Op::Save(base(5)),
            Op::Log(fdb("add", "02:00:00:00:00:0a")),
            Op::Log(fdb("add", "02:00:00:00:00:0b")),
            Op::Log(fdb("del", "02:00:00:00:00:01")),
            Op::Save(base(6)), // a whole-config change: the journal's lines are void now
            Op::Log(fdb("add", "02:00:00:00:00:0c")),
            Op::Log(fdb("del", "02:00:00:00:00:01")),
            Op::Log(fdb("add", "02:00:00:00:00:0d")),
        ];
        let root = std::env::temp_dir().join(format!("xvs-crash-{}", std::process::id()));
        let (_, _, crashed, steps) = run(&root.join("clean"), &ops, None);
        assert!(!crashed && steps > 20, "{steps} I/O steps");
        for at in 0..steps {
            let dir = root.join(format!("at{at}"));
            let (acked, inflight, crashed, _) = run(&dir, &ops, Some(at));
            assert!(crashed, "step {at}");
            // after the crash: the state is the acknowledged one, or that plus the change in
            // flight, whole; never anything else
            let store = FileStore::new(dir.join("state.toml"));
            let got = store.load().unwrap_or_else(|e| panic!("crash at step {at}: {e:#}"));
            assert!(got == acked || got == inflight, "crash at step {at}: {got:?}\nacked {acked:?}");
            // and the restarted store takes further changes that survive the next restart
            let Some(mut now) = got else { continue };
            let mut again = FileStore::new(dir.join("state.toml"));
            let r = fdb("add", "02:00:00:00:00:0e");
            r.apply(&mut now);
            again.log(&r, &mut || now.clone()).unwrap();
            let r = fdb("add", "02:00:00:00:00:0f");
            r.apply(&mut now);
            again.log(&r, &mut || now.clone()).unwrap();
            assert_eq!(FileStore::new(dir.join("state.toml")).load().unwrap(), Some(now), "after crash at {at}");
        }
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_failed_append_is_taken_back_and_later_changes_survive() {
        let dir = std::env::temp_dir().join(format!("xvs-append-{}", std::process::id()));
        let mut s = FileStore::new(dir.join("state.toml"));
        let mut cfg = base(5);
        s.save(&cfg).unwrap();
        // the next I/O step (the append's write) fails after writing half a line
        s.faults.at = Some(s.faults.steps + 1);
        let lost = fdb("add", "02:00:00:00:00:0a");
        assert!(s.log(&lost, &mut || unreachable!()).is_err());
        s.faults.at = None;
        let kept = fdb("add", "02:00:00:00:00:0b");
        kept.apply(&mut cfg);
        s.log(&kept, &mut || cfg.clone()).unwrap();
        assert_eq!(FileStore::new(dir.join("state.toml")).load().unwrap(), Some(cfg));
        let _ = std::fs::remove_dir_all(dir);
    }
}
