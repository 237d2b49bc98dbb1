//! The flash-auto job: planning (pure), the per-server session (work dir, upload, cleanup),
//! and the per-board step sequence run on a rayon pool. Workers never print: they send
//! [`Event`]s to the reporter.

mod device;
mod event;
mod plan;
mod recovery;
mod run;
mod session;
mod wrapper;

pub use device::{JobFailure, JobResult};
pub use event::Event;
pub use plan::{Assignment, DEFAULT_BIN_ADDRESS, Job, Plan, Upload, parse_assignment, plan};
pub use run::flash_auto;
pub use session::{Answer, Session, first_answer};
