//! The operating-system side of the peers: finding server programs, installing their
//! Debian packages when missing (saying so), picking free loopback ports, running helper
//! commands with their output kept for error messages, and reading server logs.

use super::PeerError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a program is: on `PATH`, or in the sbin directories a non-login root shell may
/// leave out of it.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|directory| directory.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (then it may install packages, and must start
/// PostgreSQL as another user, since PostgreSQL refuses to run as root).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.status.success() && output.stdout.trim_ascii() == b"0")
}

/// Finds a server program with `find`, installing Debian's `package` with apt-get when it
/// is missing. Says on `progress` what it installs, since that changes the machine.
pub fn ensure_installed<T>(
    program: &str,
    package: &str,
    find: impl Fn() -> Option<T>,
    progress: &dyn Fn(&str),
) -> Result<T, PeerError> {
    if let Some(found) = find() {
        return Ok(found);
    }
    let hint = format!("apt-get update && apt-get install -y {package}");
    if !running_as_root() || find_program("apt-get").is_none() {
        return Err(PeerError::NotInstalled { program: program.to_string(), hint });
    }
    progress(&format!("{program} is missing: installing the Debian package {package} ({hint})"));
    // The package lists may be missing or stale on a fresh machine; install fails without them.
    run_command(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    progress(&format!("installed {package}"));
    find().ok_or_else(|| PeerError::InstallIncomplete { package: package.to_string(), program: program.to_string() })
}

/// Runs a command to completion and returns its standard output; a failure carries the
/// command line and what it printed.
pub(crate) fn run_command(command: &mut Command) -> Result<String, PeerError> {
    let line = describe(command);
    let output = command.output().map_err(|source| PeerError::Spawn { program: line.clone(), source })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let mut printed = String::from_utf8_lossy(&output.stdout).into_owned();
    printed += &String::from_utf8_lossy(&output.stderr);
    Err(PeerError::CommandFailed { command: line, status: output.status, output: last_lines(&printed, 20) })
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A port on 127.0.0.1 that was free a moment ago. Servers are told their port on the
/// command line (Redis's `--port 0` means no TCP at all), so a port has to be chosen
/// first; another process could take it in between, which start-up then reports.
pub fn free_loopback_port() -> Result<u16, PeerError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// The end of a server's log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), 20),
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_not_others() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-no-such-program-leasehold").is_none());
    }

    #[test]
    fn failed_commands_report_their_output() {
        let error = run_command(Command::new("sh").args(["-c", "echo visible; exit 3"])).expect_err("exit 3 fails");
        let text = error.to_string();
        assert!(text.contains("sh -c") && text.contains("visible"), "{text}");
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }
}
