//! Test hooks (cargo feature `test-hooks`): a function a channel calls at each step of its
//! sends and receives, so that a test can stop a peer, or kill it, at exactly that step.
//!
//! Without the feature none of this exists and the ring has no extra code. With it, a channel
//! calls its hook ([`crate::Channel::with_test_hook`]) only when one is set.

/// A step of a send or a receive, in the order they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A registered producer wrote its intent; the claiming CAS on `tail` comes next (called
    /// before every attempt, for unregistered producers too).
    SendIntent,
    /// The CAS on `tail` succeeded: the position is claimed, nothing written yet.
    SendClaimed,
    /// Meta and payload are written; the position is not published yet.
    SendWritten,
    /// The position is published (`sequence = p + 1`).
    SendPublished,
    /// The intent is cleared: the send is complete (wake-ups follow).
    SendIntentCleared,
    /// A registered consumer wrote its intent; the claiming CAS on `head` comes next.
    RecvIntent,
    /// The CAS on `head` succeeded: the position is claimed, nothing copied yet.
    RecvClaimed,
    /// The message is copied out (or handed over in place); the slot is not freed yet.
    RecvCopied,
    /// The slot is freed (`sequence = p + capacity`).
    RecvFreed,
    /// The intent is cleared: the receive is complete.
    RecvIntentCleared,
}

impl Step {
    /// Every step, sends first.
    pub const ALL: [Step; 10] = [
        Step::SendIntent,
        Step::SendClaimed,
        Step::SendWritten,
        Step::SendPublished,
        Step::SendIntentCleared,
        Step::RecvIntent,
        Step::RecvClaimed,
        Step::RecvCopied,
        Step::RecvFreed,
        Step::RecvIntentCleared,
    ];

    /// A short name (`send-claimed`, `recv-freed`, …).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Step::SendIntent => "send-intent",
            Step::SendClaimed => "send-claimed",
            Step::SendWritten => "send-written",
            Step::SendPublished => "send-published",
            Step::SendIntentCleared => "send-intent-cleared",
            Step::RecvIntent => "recv-intent",
            Step::RecvClaimed => "recv-claimed",
            Step::RecvCopied => "recv-copied",
            Step::RecvFreed => "recv-freed",
            Step::RecvIntentCleared => "recv-intent-cleared",
        }
    }

    /// The step named `name` (as [`Self::name`] spells it).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.name() == name)
    }

    /// True for the steps of a send.
    #[must_use]
    pub const fn is_send(self) -> bool {
        matches!(
            self,
            Step::SendIntent
                | Step::SendClaimed
                | Step::SendWritten
                | Step::SendPublished
                | Step::SendIntentCleared
        )
    }
}

/// A hook: called with the step and the position it concerns.
pub type Hook = fn(Step, u64);
