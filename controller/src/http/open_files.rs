//! The open-file limit the connection bound needs: each client connection is a file
//! descriptor, and so are the agents' links, the decision record and policy files. At start
//! the soft limit is raised as far as the hard limit allows; a limit still too low for
//! `max_connections` is a start-up error that says what to change, rather than `accept`
//! failing on both listeners once the connections arrive.

/// Descriptors kept for everything but client connections (agents' links, the record,
/// policy files, runtimes started for the demo).
pub const RESERVED_FILES: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum OpenFilesError {
    #[error(
        "limits.max_connections = {max_connections} needs about {needed} open files, but this process may open only {allowed} (`ulimit -n`; the hard limit is {hard}); raise the limit (`LimitNOFILE=` in a systemd unit, `ulimit -n {needed}` in a shell) or lower max_connections to {suggested} or less"
    )]
    TooLow {
        max_connections: usize,
        needed: u64,
        allowed: u64,
        hard: u64,
        suggested: u64,
    },
    #[error("cannot read or raise the open-file limit: {0}")]
    Os(#[from] std::io::Error),
}

/// Raise the soft open-file limit for `max_connections` if need be; the limit now in force.
pub fn ensure_for(max_connections: usize) -> Result<u64, OpenFilesError> {
    let needed = max_connections as u64 + RESERVED_FILES;
    let allowed = rlimit::increase_nofile_limit(needed)?;
    check(max_connections, allowed, rlimit::Resource::NOFILE.get()?.1)
}

fn check(max_connections: usize, allowed: u64, hard: u64) -> Result<u64, OpenFilesError> {
    let needed = max_connections as u64 + RESERVED_FILES;
    if allowed >= needed {
        return Ok(allowed);
    }
    Err(OpenFilesError::TooLow {
        max_connections,
        needed,
        allowed,
        hard,
        suggested: allowed.saturating_sub(RESERVED_FILES),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_too_low_for_the_connection_bound_says_what_to_change() {
        assert_eq!(check(1024, 65_536, 65_536).expect("enough"), 65_536);
        let error = check(1024, 256, 256).expect_err("too low").to_string();
        assert!(
            error.contains("max_connections = 1024 needs about 1088 open files"),
            "{error}"
        );
        assert!(error.contains("may open only 256"), "{error}");
        assert!(error.contains("lower max_connections to 192 or less"), "{error}");
        // This process can raise its own soft limit up to the hard one.
        let (_, hard) = rlimit::Resource::NOFILE.get().expect("limit");
        if hard >= 2048 {
            assert!(ensure_for(1024).expect("raised") >= 1088);
        }
    }
}
