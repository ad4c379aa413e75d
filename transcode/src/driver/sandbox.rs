//! The child's sandbox, set up between fork and exec: killed with its
//! parent, a lower scheduling priority, and the job's [`Limits`] as
//! resource limits (address space, open files, no core dumps).

#[cfg(target_os = "linux")]
use std::io;

use tokio::process::Command;

use crate::protocol::Limits;

/// How a child's work ranks against the node's own (answering uploads and
/// polls, pushing events), which runs at the default priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Priority {
    /// A job's own work (an encode, a split job's plan or join): niceness
    /// 10, so it yields to the node's work when both want the CPU and,
    /// alone, runs at full speed.
    Job,
    /// The probe at acceptance, done for every upload after its 202:
    /// niceness 19, the lowest, so that a burst of uploads is answered
    /// first and its probes catch up behind it (they also yield to the
    /// encodes, a CFS weight of 15 against 110: a probe of a few
    /// milliseconds then takes some tens).
    Background,
}

impl Priority {
    /// Scheduling niceness (0 is the default, 19 the lowest priority).
    #[cfg(target_os = "linux")]
    fn niceness(self) -> libc::c_int {
        match self {
            Priority::Job => 10,
            Priority::Background => 19,
        }
    }
}

/// Makes the child a sandbox: the kernel SIGKILLs it when its parent goes
/// away, its scheduling priority is lowered to `priority`, and it runs
/// under `limits` (address space, open files) with no core dumps.
#[cfg(target_os = "linux")]
pub(super) fn sandbox(command: &mut Command, limits: &Limits, priority: Priority) {
    let niceness = priority.niceness();
    let parent = std::process::id() as libc::pid_t;
    let memory = limits.max_memory_bytes as libc::rlim_t;
    let files = limits.max_open_files as libc::rlim_t;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls, allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // A failure leaves the default priority.
            libc::setpriority(libc::PRIO_PROCESS, 0, niceness);
            set_limit(libc::RLIMIT_AS, memory)?;
            set_limit(libc::RLIMIT_NOFILE, files)?;
            set_limit(libc::RLIMIT_CORE, 0)
        });
    }
}

/// Sets both the soft and the hard limit of `resource` to `value`, or to the
/// current hard limit if that is lower (only root may raise it), so the
/// child cannot raise it back. Async-signal-safe: two system calls.
#[cfg(target_os = "linux")]
fn set_limit(resource: Resource, value: libc::rlim_t) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(resource, &mut current) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let value = if current.rlim_max == libc::RLIM_INFINITY {
        value
    } else {
        value.min(current.rlim_max)
    };
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit to read from.
    if unsafe { libc::setrlimit(resource, &limit) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The type of an `RLIMIT_*` constant, which differs between Linux libcs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(all(target_os = "linux", not(target_env = "gnu")))]
type Resource = libc::c_int;

#[cfg(not(target_os = "linux"))]
pub(super) fn sandbox(_command: &mut Command, _limits: &Limits, _priority: Priority) {}
