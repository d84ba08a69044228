//! `mount -t fuse.vigilfs IMAGE DIR`: the mount helper.
//!
//! mount(8) runs `/sbin/mount.fuse.vigilfs IMAGE DIR [-n] [-s] [-v] -o
//! OPTIONS` for a `fuse.vigilfs` filesystem; `vigilfs install-mount-helper`
//! makes that name a symlink to this binary. Started under that name (file
//! name of argv[0]), vigilfs behaves as `vigilfs mount IMAGE DIR -o
//! OPTIONS --daemon`, printing nothing when it succeeds, and failing with
//! mount(8)'s exit codes (1 wrong invocation, 32 mount failure).
//!
//! mount.fuse3 (`mount -t fuse vigilfs#IMAGE DIR`, or `fuse.vigilfs` when
//! the specific helper is missing) runs `vigilfs IMAGE DIR -o OPTIONS`
//! instead: a first argument that is not a subcommand, followed by an
//! existing directory, is taken as that form.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::failure::Failure;
use crate::mount_command::MountRequest;

/// The helper's name mount(8) looks for.
pub const HELPER_NAME: &str = "mount.fuse.vigilfs";

/// mount(8)'s exit status for `failure` of a helper invocation. mount
/// passes a helper's status on, and scripts read it by mount's table: 1
/// is a wrong invocation (or permissions), 32 a mount failure. vigilfs's
/// own codes would mislead there: 2 (bad arguments) is mount's "system
/// error", 8 (operational error) its "user interrupt".
pub fn as_mount_failure(failure: Failure) -> Failure {
    let code = match failure.exit_code() {
        _ if failure.is_mount_refused() => MOUNT_FAILURE,
        1 | 2 => MOUNT_USAGE,
        _ => MOUNT_FAILURE,
    };
    Failure::with_code(failure.to_string(), code)
}

/// mount(8): incorrect invocation or permissions.
const MOUNT_USAGE: u8 = 1;
/// mount(8): mount failure.
const MOUNT_FAILURE: u8 = 32;

/// What the command line asks for when it is a helper invocation: `None`
/// for an ordinary `vigilfs SUBCOMMAND` line.
pub fn helper_request(
    arguments: &[OsString],
    subcommands: &[&str],
) -> Option<Result<MountRequest, Failure>> {
    let program = arguments.first()?;
    let name = Path::new(program)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let as_helper = name == HELPER_NAME || name == "mount.vigilfs";
    let rest = &arguments[1..];
    if !as_helper {
        let first = rest.first()?.to_string_lossy();
        let looks_like_fuse3 = !first.starts_with('-')
            && !subcommands.contains(&first.as_ref())
            && rest.get(1).is_some_and(|dir| Path::new(dir).is_dir());
        if !looks_like_fuse3 {
            return None;
        }
    }
    Some(parse(rest))
}

fn parse(arguments: &[OsString]) -> Result<MountRequest, Failure> {
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut options = Vec::new();
    let mut iter = arguments.iter();
    while let Some(argument) = iter.next() {
        let text = argument.to_string_lossy();
        if text == "-o" {
            let value = iter
                .next()
                .ok_or_else(|| Failure::arguments("-o needs a value"))?;
            options.push(value.to_string_lossy().into_owned());
        } else if let Some(value) = text.strip_prefix("-o") {
            options.push(value.to_string());
        } else if matches!(text.as_ref(), "-n" | "-s" | "-v" | "-i" | "-f") {
            // No mtab to write, sloppy, verbose, no further helpers,
            // foreground (the helper always detaches): nothing to do.
        } else if text.starts_with('-') {
            return Err(Failure::arguments(format!(
                "mount helper: unknown flag `{text}`"
            )));
        } else {
            positional.push(PathBuf::from(argument));
        }
    }
    let [source, mountpoint] = <[PathBuf; 2]>::try_from(positional).map_err(|_| {
        Failure::arguments(format!(
            "usage: {HELPER_NAME} IMAGE MOUNTPOINT [-o OPTIONS]"
        ))
    })?;
    let source = source.to_string_lossy();
    let image = PathBuf::from(source.strip_prefix("vigilfs#").unwrap_or(&source));
    Ok(MountRequest {
        image,
        mountpoint,
        options,
        daemon: true,
        size: None,
        pid_file: None,
        log_file: None,
        as_mount_helper: true,
    })
}

/// `vigilfs install-mount-helper`: the `DIR/mount.fuse.vigilfs` symlink.
pub fn install(directory: &Path, force: bool) -> Result<u8, Failure> {
    let target = std::env::current_exe()
        .and_then(|path| path.canonicalize())
        .map_err(|error| Failure::operational(format!("where is this program? {error}")))?;
    let link = directory.join(HELPER_NAME);
    if let Ok(existing) = std::fs::read_link(&link) {
        if existing == target {
            println!("{} already points to {}", link.display(), target.display());
            return Ok(0);
        }
        if !force {
            return Err(Failure::usage(format!(
                "{} exists and points to {}; use --force to replace it",
                link.display(),
                existing.display()
            )));
        }
        std::fs::remove_file(&link)
            .map_err(|error| Failure::operational(format!("{}: {error}", link.display())))?;
    } else if link.exists() {
        return Err(Failure::usage(format!(
            "{} exists and is not a symlink; remove it first",
            link.display()
        )));
    }
    std::os::unix::fs::symlink(&target, &link)
        .map_err(|error| Failure::operational(format!("{}: {error}", link.display())))?;
    println!("{} -> {}", link.display(), target.display());
    if searched_by_mount(directory) {
        println!("now `mount -t fuse.vigilfs IMAGE DIR -o OPTIONS` mounts with vigilfs");
    } else {
        println!(
            "mount(8) looks for its helpers in /sbin only: `mount -t fuse.vigilfs` will not \
             find this one (run it as {} IMAGE DIR -o OPTIONS)",
            link.display()
        );
    }
    Ok(0)
}

/// Whether mount(8) finds helpers in `directory`: util-linux looks in
/// /sbin alone (often a link to /usr/sbin), never in PATH.
fn searched_by_mount(directory: &Path) -> bool {
    let canonical = |path: &Path| path.canonicalize().ok();
    canonical(directory).is_some_and(|directory| Some(directory) == canonical(Path::new("/sbin")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_helper_name_means_a_daemon_mount() {
        let request = helper_request(
            &strings(&[
                "/sbin/mount.fuse.vigilfs",
                "/srv/disk.img",
                "/mnt",
                "-n",
                "-o",
                "rw,errors=continue",
            ]),
            &["mount"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.image, PathBuf::from("/srv/disk.img"));
        assert_eq!(request.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(request.options, ["rw,errors=continue"]);
        assert!(request.daemon && request.as_mount_helper);
    }

    #[test]
    fn the_mount_fuse3_form_is_recognised() {
        let directory = std::env::temp_dir();
        let directory = directory.to_str().unwrap();
        let request = helper_request(
            &strings(&["vigilfs", "vigilfs#/srv/disk.img", directory, "-oro"]),
            &["mount"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.image, PathBuf::from("/srv/disk.img"));
        assert_eq!(request.options, ["ro"]);
        // Ordinary command lines are not helper invocations.
        assert!(
            helper_request(&strings(&["vigilfs", "mount", "a", directory]), &["mount"]).is_none()
        );
        assert!(helper_request(&strings(&["vigilfs", "--help"]), &["mount"]).is_none());
        assert!(helper_request(&strings(&["vigilfs"]), &["mount"]).is_none());
    }

    #[test]
    fn bad_helper_lines_are_argument_errors() {
        let refused = helper_request(&strings(&[HELPER_NAME, "only-one"]), &[])
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.exit_code(), 2);
        let refused = helper_request(&strings(&[HELPER_NAME, "a", "b", "-z"]), &[])
            .unwrap()
            .unwrap_err();
        assert!(refused.to_string().contains("-z"));
    }
}
