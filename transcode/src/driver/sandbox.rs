//! The child's sandbox, set up between fork and exec: killed with its
//! parent, a lower scheduling priority, and the job's [`Limits`] as
//! resource limits (address space, open files, no core dumps).

#[cfg(target_os = "linux")]
use std::io;

use tokio::process::Command;

use crate::protocol::Limits;

/// Scheduling niceness of transcoder children (0 is the default, 19 the
/// lowest priority).
#[cfg(target_os = "linux")]
const CHILD_NICENESS: libc::c_int = 10;

/// Makes the child a sandbox: the kernel SIGKILLs it when its parent goes
/// away, its scheduling priority is lowered, and it runs under `limits`
/// (address space, open files) with no core dumps.
#[cfg(target_os = "linux")]
pub(super) fn sandbox(command: &mut Command, limits: &Limits) {
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
            // Encoding yields to the node's own work (answering polls,
            // pushing events) when both want the CPU; alone, it runs at full
            // speed. A failure leaves the default priority.
            libc::setpriority(libc::PRIO_PROCESS, 0, CHILD_NICENESS);
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
pub(super) fn sandbox(_command: &mut Command, _limits: &Limits) {}
