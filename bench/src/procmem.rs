//! Memory of a process tree, from `/proc`: the root process and all its descendants, summing
//! PSS (`/proc/PID/smaps_rollup`, shared pages split between their users, so model copies and
//! libraries are counted once in total) and RSS (`VmRSS`, shared pages counted in every process).
//! PSS is the fair figure for a server made of several processes (the reference: a Python
//! launcher, a Java front end, one Python worker per CPU).

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

/// `/proc` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// A `/proc` file could not be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        err: std::io::Error,
    },
    /// The root process does not exist.
    #[error("no process {pid}")]
    NoProcess {
        /// The PID.
        pid: u32,
    },
}

/// Result of this module.
pub type Result<T, E = MemError> = std::result::Result<T, E>;

/// Memory of a process tree.
#[derive(Debug, Clone, Serialize)]
pub struct TreeMemory {
    /// Processes counted.
    pub processes: usize,
    /// Sum of PSS, MiB.
    pub pss_mib: f64,
    /// Sum of RSS, MiB.
    pub rss_mib: f64,
    /// Sum of each process's peak RSS (`VmHWM`), MiB: an upper bound of the peak.
    pub peak_rss_mib: f64,
}

/// Which processes to count.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    /// A process and its descendants.
    Tree(u32),
    /// Every process of a session (`setsid`), and their descendants.
    Session(u32),
}

/// Sums the memory of the selected processes.
pub fn tree_memory(selection: Selection) -> Result<TreeMemory> {
    let procs = process_map()?;
    let roots: Vec<u32> = match selection {
        Selection::Tree(pid) => vec![pid],
        Selection::Session(sid) => {
            let mut r: Vec<u32> = procs
                .iter()
                .filter(|(_, p)| p.session == sid)
                .map(|(&pid, _)| pid)
                .collect();
            r.sort_unstable();
            r
        }
    };
    let root = match selection {
        Selection::Tree(pid) | Selection::Session(pid) => pid,
    };
    if roots.is_empty() || !roots.iter().all(|p| procs.contains_key(p)) {
        return Err(MemError::NoProcess { pid: root });
    }
    let parents: HashMap<u32, u32> = procs.iter().map(|(&pid, p)| (pid, p.ppid)).collect();
    let mut tree: Vec<u32> = roots
        .iter()
        .flat_map(|&r| descendants(r, &parents))
        .collect();
    tree.sort_unstable();
    tree.dedup();
    let (mut pss_kib, mut rss_kib, mut hwm_kib) = (0u64, 0u64, 0u64);
    let mut counted = 0;
    for pid in &tree {
        // A process may exit between the listing and the read: skip it.
        let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        pss_kib += field_kib(&rollup, "Pss:").unwrap_or(0);
        rss_kib += field_kib(&status, "VmRSS:").unwrap_or(0);
        hwm_kib += field_kib(&status, "VmHWM:").unwrap_or(0);
        counted += 1;
    }
    Ok(TreeMemory {
        processes: counted,
        pss_mib: pss_kib as f64 / 1024.0,
        rss_mib: rss_kib as f64 / 1024.0,
        peak_rss_mib: hwm_kib as f64 / 1024.0,
    })
}

/// `root` and every process whose chain of parents reaches it.
fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        let mut children: Vec<u32> = parents
            .iter()
            .filter(|&(&c, &pp)| pp == p && c != p)
            .map(|(&c, _)| c)
            .collect();
        children.sort_unstable();
        tree.extend(children);
        i += 1;
    }
    tree
}

/// Parent and session of a process.
struct ProcInfo {
    ppid: u32,
    session: u32,
}

/// PID -> parent and session of every process.
fn process_map() -> Result<HashMap<u32, ProcInfo>> {
    let dir = fs::read_dir("/proc").map_err(|err| MemError::Io {
        path: "/proc".into(),
        err,
    })?;
    let mut map = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((ppid, session)) = parse_stat(&stat)
        {
            map.insert(pid, ProcInfo { ppid, session });
        }
    }
    Ok(map)
}

/// Parent PID and session ID from `/proc/PID/stat` (fields 4 and 6; field 2, `(comm)`, may
/// hold spaces and parentheses).
fn parse_stat(stat: &str) -> Option<(u32, u32)> {
    let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
    let ppid = after.nth(1)?.parse().ok()?;
    let session = after.nth(1)?.parse().ok()?;
    Some((ppid, session))
}

/// The kB value of a `Name:   123 kB` line.
fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status_fields() {
        assert_eq!(parse_stat("42 (a (b) c) S 7 40 41 0"), Some((7, 41)));
        assert_eq!(
            field_kib("Rss: 10 kB\nPss:   2048 kB\n", "Pss:"),
            Some(2048)
        );
        assert_eq!(field_kib("Rss: 10 kB\n", "Pss:"), None);
    }

    #[test]
    fn tree_walk_follows_parents() {
        let parents = HashMap::from([(1, 0), (2, 1), (3, 2), (4, 1), (5, 9)]);
        let mut t = descendants(1, &parents);
        t.sort_unstable();
        assert_eq!(t, [1, 2, 3, 4]);
    }

    #[test]
    fn own_process_has_memory() {
        let m = tree_memory(Selection::Tree(std::process::id())).unwrap();
        assert!(m.processes >= 1);
        assert!(m.rss_mib > 0.0 && m.pss_mib > 0.0, "{m:?}");
        assert!(m.peak_rss_mib >= m.rss_mib, "{m:?}");
        assert!(matches!(
            tree_memory(Selection::Session(u32::MAX)),
            Err(MemError::NoProcess { .. })
        ));
    }
}
