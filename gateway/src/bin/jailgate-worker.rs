//! `jailgate-worker`: see the `worker` crate. Its own executable, so that every worker starts
//! from a fresh exec of a small program, never from a fork of the threaded gateway.

fn main() -> std::process::ExitCode {
    worker::main()
}
