//! A daemon in memory around the [`Plane`], for unit tests and fuzzing of the control plane:
//! it carries plans out against a model of what the cores hold (their static FDB entries)
//! and of what the store would give back at the next start, lets any effect fail, and checks
//! after every request that the three agree with the plane.
//!
//! May depend on: control::plane and proto, config, tables, types.

use super::plane::{Plan, Plane};
use super::proto::Command;
use crate::config::Config;
use crate::tables::{FdbDest, Tables};
use crate::types::TenantId;
use crate::wire::MacAddr;
use std::collections::HashMap;
use std::sync::Arc;

/// Which of a plan's effects fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every effect succeeds.
    None,
    /// Opening a new port fails (a whole-configuration change is refused before storing).
    OpenPort,
    /// Storing fails (the change is refused; static FDB deltas already sent are undone).
    Store,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by the plane, with its message.
    Refused(String),
    /// Planned, but an effect failed: nothing changed.
    Failed,
    /// Applied and committed.
    Applied,
    /// A query: nothing changed.
    Answered,
}

/// The plane with the models its effects act on.
pub struct Model {
    /// The control plane.
    pub plane: Plane,
    /// The static FDB entries every core holds.
    cores: HashMap<(TenantId, MacAddr), FdbDest>,
    /// What the store gives back at the next start.
    stored: Config,
}

fn entries(t: &Tables) -> HashMap<(TenantId, MacAddr), FdbDest> {
    t.static_fdb.iter().map(|(t, m, d)| ((*t, *m), *d)).collect()
}

impl Model {
    /// A model daemon started on `cfg` (validated: it must build).
    pub fn new(cfg: Config) -> Result<Model, String> {
        let tables = Arc::new(cfg.build(None, None).map_err(|e| e.to_string())?);
        let cores = entries(&tables);
        Ok(Model { plane: Plane::new(cfg.clone(), tables), cores, stored: cfg })
    }

    /// Runs `cmd` with the effects failing as `fault` says.
    pub fn run(&mut self, cmd: Command, fault: Fault) -> Outcome {
        let plan = match self.plane.plan(cmd) {
            Ok(p) => p,
            Err(e) => return Outcome::Refused(e),
        };
        match plan {
            Plan::Answer(_) | Plan::Read(_) => Outcome::Answered,
            Plan::Apply(a) => {
                if fault != Fault::None {
                    return Outcome::Failed; // nothing was sent to the cores or stored
                }
                self.stored = a.config.clone();
                for k in &a.change.static_del {
                    self.cores.remove(k);
                }
                for (t, m, d) in &a.change.static_add {
                    self.cores.insert((*t, *m), *d);
                }
                self.plane.commit_apply(*a);
                Outcome::Applied
            }
            Plan::Fdb(f) => {
                // sent to the cores while the store writes
                for k in &f.del {
                    self.cores.remove(k);
                }
                for (t, m, d) in &f.add {
                    self.cores.insert((*t, *m), *d);
                }
                if fault == Fault::Store {
                    for k in &f.undo_del {
                        self.cores.remove(k);
                    }
                    for (t, m, d) in &f.undo_add {
                        self.cores.insert((*t, *m), *d);
                    }
                    return Outcome::Failed;
                }
                f.record.apply(&mut self.stored);
                self.plane.commit_fdb(*f);
                Outcome::Applied
            }
        }
    }

    /// Checks that the cores, the store and the plane agree; the first disagreement found.
    pub fn check(&self) -> Result<(), String> {
        let want = self.plane.materialize();
        // What the plane says is the state builds, with the running ids.
        let built = want
            .build_after(Some(self.plane.tables()), None, None)
            .map_err(|e| format!("the desired state does not build: {e}"))?;
        let t = self.plane.tables();
        let names = |t: &Tables| -> (Vec<Option<String>>, Vec<Option<String>>) {
            (
                t.tenants.iter().map(|x| x.as_ref().map(|x| x.name.clone())).collect(),
                t.ports.iter().map(|x| x.as_ref().map(|x| x.name.clone())).collect(),
            )
        };
        if names(&built) != names(t) {
            return Err(format!("running tables {:?} differ from the desired state's {:?}", names(t), names(&built)));
        }
        let (have, should) = (sorted(&self.cores), sorted(&entries(&built)));
        if have != should {
            return Err(format!("cores hold static entries {have:?}, the desired state has {should:?}"));
        }
        // The store gives back the same state, and the next start accepts it.
        let text = self.stored.to_toml();
        let back = Config::from_toml(&text).map_err(|e| format!("the stored state does not load: {e}\n{text}"))?;
        back.build(None, None).map_err(|e| format!("the stored state does not build: {e}\n{text}"))?;
        if normal(back) != normal(want.clone()) {
            return Err(format!("the store would give back\n{text}\nbut the state is\n{}", want.to_toml()));
        }
        Ok(())
    }
}

fn sorted(m: &HashMap<(TenantId, MacAddr), FdbDest>) -> Vec<(u16, MacAddr, FdbDest)> {
    let mut v: Vec<_> = m.iter().map(|((t, m), d)| (t.0, *m, *d)).collect();
    v.sort_by_key(|(t, m, _)| (*t, *m));
    v
}

/// `c` with each tenant's static entries in one order and MACs written one way.
fn normal(mut c: Config) -> Config {
    for t in &mut c.tenants {
        for f in &mut t.fdb {
            if let Ok(m) = crate::types::parse_mac(&f.mac) {
                f.mac = crate::types::mac_str(&m);
            }
        }
        t.fdb.sort_by(|a, b| a.mac.cmp(&b.mac));
    }
    c
}
