//! The `claude-route` binary: parse, configure, log, dispatch.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    claude_route::allocator::no_huge_pages();
    let cli = claude_route::cli::Cli::parse();
    match claude_route::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("claude-route: {message}");
            ExitCode::FAILURE
        }
    }
}
