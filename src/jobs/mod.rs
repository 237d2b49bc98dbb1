//! The flash-auto job: planning (pure), the per-server session (work dir, upload, cleanup),
//! and the per-board step sequence run on a rayon pool. Workers never print: they send
//! [`Event`]s to the reporter.

mod attempt;
mod command;
mod device;
mod event;
mod fanout;
mod firmware;
mod locks;
mod plan;
mod preview;
mod recovery;
mod run;
mod session;
mod wrapper;

pub use attempt::JobFailure;
pub use command::{FlashRequest, flash_auto_command};
pub use device::JobResult;
pub use event::{Event, Step};
pub use fanout::each_server;
pub use firmware::human_size;
pub use plan::{Assignment, DEFAULT_BIN_ADDRESS, Job, Plan, Upload, parse_assignment, plan};
pub use preview::{Preview, dry_run};
pub use run::flash_auto;
pub use session::{
    Answer, HostFailure, Session, agent_event, first_answer, first_answer_with, parse_df_available,
};
