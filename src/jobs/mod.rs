//! The board jobs of `flash-auto`, `reset` and `erase` (an [`Operation`] each): planning
//! (pure, with alias patterns), the per-server session (work dir, upload, cleanup), every
//! server of a run at once, and the per-board step sequence run on each server's rayon pool.
//! Workers never print: they send [`Event`]s to the reporter.

mod attempt;
mod command;
mod device;
mod event;
mod fanout;
mod firmware;
mod locks;
mod operation;
mod plan;
mod preview;
mod recovery;
mod run;
mod select;
mod session;
mod wrapper;

pub use attempt::JobFailure;
pub use command::{
    BoardRequest, FlashRequest, board_command, flash_auto_command, split_board_server, split_server,
};
pub use device::JobResult;
pub use event::{Event, Step};
pub use fanout::{each_server, each_server_named};
pub use firmware::{DEFAULT_BIN_ADDRESS, Upload, human_size};
pub use operation::{ERASE, FLASH, FlashFile, Operation, RESET, Words};
pub use plan::{Assignment, Job, Plan, parse_assignment, plan, plan_boards};
pub use preview::{Preview, dry_run};
pub use run::{ServerRun, run};
pub use session::{
    Answer, HostFailure, Session, agent_event, first_answer, first_answer_with, parse_df_available,
};
