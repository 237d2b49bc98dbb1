//! The `stm-remote` binary: everything lives in the library so that tests share it.

fn main() -> std::process::ExitCode {
    stm_remote::main_impl()
}
