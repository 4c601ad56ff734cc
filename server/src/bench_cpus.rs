//! How a benchmark shares this machine's CPUs with the server it measures.
//!
//! On one machine the load generator (the simulated clients and the fake upstream) competes with the
//! server for the same cores, so a latency measured there is partly the load generator's own CPU
//! time. `Split` gives the server and the load generator separate CPUs, as if the clients ran on
//! another machine: the server process is started under `taskset` with the first half of the CPUs
//! this process may use, and every thread of the bench process is moved to the other half. With
//! fewer than two CPUs, without `taskset` (util-linux), or off Linux it falls back to sharing, and
//! says so in the report.

use std::process::Command;

/// `--cpus`: how the server and the load generator share the CPUs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuMode {
    /// The server on half of the CPUs, the load generator on the other half.
    #[default]
    Split,
    /// Everything on every CPU.
    Shared,
}

/// The CPUs each side got, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuPlan {
    /// The server's CPUs (`taskset -c` list); `None` when shared.
    pub server: Option<String>,
    /// The load generator's CPUs; `None` when shared.
    pub bench: Option<String>,
    /// Why a split was asked for but not made.
    pub fallback: Option<String>,
}

impl CpuPlan {
    /// Pins this process's threads (those running now and, by inheritance, those started later)
    /// and returns the plan, whose `server` list goes to [`CpuPlan::wrap`] when the server starts.
    pub fn apply(mode: CpuMode) -> CpuPlan {
        if mode == CpuMode::Shared {
            return CpuPlan::default();
        }
        match split_allowed_cpus() {
            Err(why) => CpuPlan {
                fallback: Some(why),
                ..CpuPlan::default()
            },
            Ok((server, bench)) => {
                let pid = std::process::id().to_string();
                let pinned = Command::new("taskset")
                    .args(["-a", "-p", "-c", &bench, &pid])
                    .output();
                match pinned {
                    Ok(output) if output.status.success() => CpuPlan {
                        server: Some(server),
                        bench: Some(bench),
                        fallback: None,
                    },
                    Ok(output) => CpuPlan {
                        fallback: Some(format!(
                            "taskset failed: {}",
                            String::from_utf8_lossy(&output.stderr).trim()
                        )),
                        ..CpuPlan::default()
                    },
                    Err(error) => CpuPlan {
                        fallback: Some(format!("taskset could not run ({error})")),
                        ..CpuPlan::default()
                    },
                }
            }
        }
    }

    /// The program and leading arguments that start `binary` on the server's CPUs.
    pub fn wrap(&self, binary: &std::path::Path) -> (std::ffi::OsString, Vec<std::ffi::OsString>) {
        match &self.server {
            Some(cpus) => (
                "taskset".into(),
                vec!["-c".into(), cpus.into(), binary.as_os_str().to_owned()],
            ),
            None => (binary.as_os_str().to_owned(), Vec::new()),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match (&self.server, &self.bench, &self.fallback) {
            (Some(server), Some(bench), _) => {
                format!("CPUs: server {server}, load generator {bench} (split)")
            }
            (_, _, Some(why)) => format!("CPUs: shared ({why})"),
            _ => "CPUs: shared".into(),
        }
    }
}

/// The CPUs this process may run on, from `/proc/self/status`, split into (server, bench) halves
/// as `taskset -c` lists.
fn split_allowed_cpus() -> Result<(String, String), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("no /proc/self/status ({e})"))?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .ok_or("no Cpus_allowed_list in /proc/self/status")?;
    let cpus = parse_cpu_list(list.trim())?;
    split(&cpus).ok_or_else(|| format!("{} CPU, nothing to split", cpus.len()))
}

/// `0-3,6,8-9` → `[0, 1, 2, 3, 6, 8, 9]`.
fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("unreadable CPU list {list:?}"))
        };
        match part.split_once('-') {
            Some((from, to)) => cpus.extend(number(from)?..=number(to)?),
            None => cpus.push(number(part)?),
        }
    }
    Ok(cpus)
}

/// The first half (rounded down, at least one) for the server, the rest for the load generator.
fn split(cpus: &[usize]) -> Option<(String, String)> {
    if cpus.len() < 2 {
        return None;
    }
    let (server, bench) = cpus.split_at(cpus.len() / 2);
    let list = |cpus: &[usize]| {
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    Some((list(server), list(bench)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_read_and_split_in_halves() {
        assert_eq!(parse_cpu_list("0-1").unwrap(), vec![0, 1]);
        assert_eq!(
            parse_cpu_list("0-3,6, 8-9").unwrap(),
            vec![0, 1, 2, 3, 6, 8, 9]
        );
        assert!(parse_cpu_list("0-x").is_err());
        assert_eq!(split(&[0, 1]), Some(("0".into(), "1".into())));
        assert_eq!(split(&[0, 1, 2]), Some(("0".into(), "1,2".into())));
        assert_eq!(split(&[4, 5, 6, 7]), Some(("4,5".into(), "6,7".into())));
        assert_eq!(split(&[3]), None);
    }

    #[test]
    fn a_shared_plan_starts_the_binary_as_is() {
        let plan = CpuPlan::apply(CpuMode::Shared);
        assert_eq!(plan, CpuPlan::default());
        let (program, args) = plan.wrap(std::path::Path::new("/bin/moat"));
        assert_eq!(program, "/bin/moat");
        assert!(args.is_empty());
        let split = CpuPlan {
            server: Some("0".into()),
            bench: Some("1".into()),
            fallback: None,
        };
        let (program, args) = split.wrap(std::path::Path::new("/bin/moat"));
        assert_eq!(program, "taskset");
        assert_eq!(args, vec!["-c", "0", "/bin/moat"]);
        assert_eq!(split.describe(), "CPUs: server 0, load generator 1 (split)");
    }
}
