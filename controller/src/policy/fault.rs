//! Why a policy call did not produce a usable decision. Every fault sends the request to
//! the built-in fallback; none reaches the client.

/// A policy failure, classified for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFault {
    #[error("deadline of {deadline_ms} ms exceeded")]
    Deadline { deadline_ms: u32 },
    #[error("memory cap of {memory_mib} MiB reached")]
    Memory { memory_mib: u32 },
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("invalid decision: {0}")]
    InvalidDecision(String),
    /// The host had no policy thread for the call in time (every one busy, or the queue
    /// full): the fallback decides, and it is not counted against the policy.
    #[error("no policy thread was free in time: {0}")]
    Busy(String),
    /// The request stopped waiting for a call still running on a policy thread; that call
    /// charges its own fault when its deadline stops it (counting this too would count the
    /// one overrun twice).
    #[error("no answer within {waited_ms} ms; the call is stopped at its deadline")]
    Overdue { waited_ms: u32 },
}

impl PolicyFault {
    /// Stable label for the `kind` metric dimension.
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::Deadline { .. } => FaultKind::Deadline,
            Self::Memory { .. } => FaultKind::Memory,
            Self::Trap(_) => FaultKind::Trap,
            Self::Instantiate(_) => FaultKind::Instantiate,
            Self::InvalidDecision(_) => FaultKind::InvalidDecision,
            Self::Busy(_) => FaultKind::Busy,
            Self::Overdue { .. } => FaultKind::Deadline,
        }
    }

    /// Whether the caller counts this fault against the policy (towards its revert or its
    /// canary's rollback): not for a busy host, which is not the policy's doing, nor for an
    /// overdue call, which the policy thread charges itself when its deadline stops it.
    pub fn is_policys(&self) -> bool {
        !matches!(self, Self::Busy(_) | Self::Overdue { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Deadline,
    Memory,
    Trap,
    Instantiate,
    InvalidDecision,
    Busy,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Deadline,
        FaultKind::Memory,
        FaultKind::Trap,
        FaultKind::Instantiate,
        FaultKind::InvalidDecision,
        FaultKind::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::Trap => "trap",
            FaultKind::Instantiate => "instantiate",
            FaultKind::InvalidDecision => "invalid_decision",
            FaultKind::Busy => "busy",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
