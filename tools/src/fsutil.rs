//! File helpers: outputs are checked before the work starts, written whole or not at all, and
//! never leave a temporary file behind, not even when the run is interrupted (SIGINT, SIGTERM,
//! SIGHUP).

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The temporary files being written now, for the signal handler: a fixed table of C strings
/// that the handler reads without locking or allocating (a signal handler may do neither).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod live_temps {
    use std::ffi::{CString, c_char, c_int};
    use std::path::Path;
    use std::sync::Once;
    use std::sync::atomic::{AtomicPtr, Ordering};

    /// More files than the tools ever write at once.
    const SLOTS: usize = 16;
    static TEMP_PATHS: [AtomicPtr<c_char>; SLOTS] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
    static HANDLER: Once = Once::new();

    /// Removes every registered file and ends the process with 128 + the signal's number, as a
    /// shell reports a run the signal ended: only atomic loads, `unlink` and `_exit`, all
    /// async-signal-safe.
    extern "C" fn on_signal(signal: c_int) {
        for slot in &TEMP_PATHS {
            let path = slot.load(Ordering::SeqCst);
            if !path.is_null() {
                // SAFETY: a registered pointer stays valid for the whole process (never freed).
                unsafe { libc::unlink(path) };
            }
        }
        // SAFETY: _exit ends the process at once, without running anything else.
        unsafe { libc::_exit(128 + signal) };
    }

    fn install() {
        HANDLER.call_once(|| {
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                // SAFETY: the handler only calls async-signal-safe functions; a signal the
                // process ignores (a background job's SIGINT) stays ignored.
                unsafe {
                    if libc::signal(signal, libc::SIG_IGN) != libc::SIG_IGN {
                        libc::signal(
                            signal,
                            on_signal as extern "C" fn(c_int) as libc::sighandler_t,
                        );
                    }
                }
            }
        });
    }

    /// Registers `path` for removal on interruption; returns its slot (`None`: table full, the
    /// file is written unprotected).
    pub fn register(path: &Path) -> Option<usize> {
        use std::os::unix::ffi::OsStrExt;
        install();
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        let ptr = c.into_raw();
        for (i, slot) in TEMP_PATHS.iter().enumerate() {
            if slot
                .compare_exchange(
                    std::ptr::null_mut(),
                    ptr,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
            {
                return Some(i);
            }
        }
        // SAFETY: `ptr` came from `into_raw` just above and was never shared.
        drop(unsafe { CString::from_raw(ptr) });
        None
    }

    /// Forgets the file of `slot`. Its string is deliberately leaked: a handler running on
    /// another thread may be reading it (a few bytes per file written).
    pub fn unregister(slot: Option<usize>) {
        if let Some(i) = slot {
            TEMP_PATHS[i].store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

/// Elsewhere no handler is installed (the tools depend on `libc` only on glibc Linux): an
/// interrupted write may leave its temporary file.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod live_temps {
    pub fn register(_: &std::path::Path) -> Option<usize> {
        None
    }
    pub fn unregister(_: Option<usize>) {}
}

/// The temporary file `path` is written through: hidden, in the same folder (so the final
/// rename does not cross file systems), named after the process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    folder_of(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Registers `tmp` for removal on interruption, then creates it: a signal in between finds
/// nothing to remove, never a file it does not know.
fn create_registered(tmp: &Path) -> (Option<usize>, std::io::Result<std::fs::File>) {
    let slot = live_temps::register(tmp);
    (slot, std::fs::File::create(tmp))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so an
/// error or an interruption never leaves a half-written output (nor the temporary file). Errors
/// name `path`, the file the user asked for.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let (slot, file) = create_registered(&tmp);
    let result = file.and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    live_temps::unregister(slot);
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Whether two paths name the same existing file (links and `..` resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Checks, before any work starts, that `output` can be written: not a folder, in a folder
/// that exists and takes new files, and not one of `inputs` (which it would replace) unless
/// `force`. A long compression then never ends in an unwritable output.
pub fn check_output(output: &Path, inputs: &[&Path], force: bool) -> Result<()> {
    if let Some(input) = inputs.iter().find(|i| same_file(i, output))
        && !force
    {
        bail!(
            "{} is also the input {}: writing it would replace the original; choose another \
             output, or pass --force to replace it",
            output.display(),
            input.display()
        );
    }
    if output.is_dir() {
        bail!(
            "{} is a folder: give the output a file name",
            output.display()
        );
    }
    let folder = folder_of(output);
    if !folder.is_dir() {
        bail!(
            "cannot write {}: the folder {} does not exist",
            output.display(),
            folder.display()
        );
    }
    // The write goes through a temporary file in the same folder: try to create it now.
    let tmp = temp_path(output);
    let (slot, probe) = create_registered(&tmp);
    if probe.is_ok() {
        let _ = std::fs::remove_file(&tmp);
    }
    live_temps::unregister(slot);
    probe.with_context(|| {
        format!(
            "cannot write {}: the folder {} does not take new files",
            output.display(),
            folder.display()
        )
    })?;
    Ok(())
}

/// Reads a whole file, with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Largest `.nnz` file the tools read (a file's header declares its size).
const MAX_NNZ_BYTES: u64 = 4 << 30;

/// Reads a `.nnz` file, checking its magic before reading further and reading no more than its
/// header declares (plus one byte, so trailing data is still reported): a device or a huge
/// file of something else is refused after eight bytes.
pub fn read_nnz(path: &Path) -> Result<Vec<u8>> {
    use nnzip_core::format::MAGIC;
    use nnzip_core::format::decode::HEADER_BYTES;
    let cannot = || format!("cannot read {}", path.display());
    let mut file = std::fs::File::open(path).with_context(cannot)?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    (&mut file)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if !bytes.starts_with(&MAGIC) {
        bail!(
            "{}: not a .nnz file (it does not start with the .nnz magic bytes)",
            path.display()
        );
    }
    // The header's last eight bytes: the body length (docs/FORMAT.md). A short header is left
    // to the decoder, which names what is missing.
    let body_len = match bytes.get(HEADER_BYTES - 8..HEADER_BYTES) {
        Some(b) => u64::from_le_bytes(b.try_into().unwrap_or_default()),
        None => 0,
    };
    if body_len > MAX_NNZ_BYTES {
        bail!(
            "{}: the header declares {body_len} bytes, over the {MAX_NNZ_BYTES} a .nnz file may have",
            path.display()
        );
    }
    (&mut file)
        .take(body_len + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    Ok(bytes)
}
