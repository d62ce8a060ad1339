//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while building or locating a guest image.
///
/// Every I/O failure names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read", "create directory".
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A host tool the builder needs is not installed.
    #[error("`{tool}` was not found on PATH: {hint}")]
    ToolMissing { tool: String, hint: String },

    /// A host tool ran but failed.
    #[error("`{command}` failed ({status}): {stderr}{hint}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
        /// Extra advice, empty or starting with "; ".
        hint: String,
    },

    /// `apt-cache depends` did not name a versioned kernel package.
    #[error(
        "`apt-cache depends {meta}` names no linux-image-<version>-cloud-amd64 package; \
         run `apt-get update` (or pass the kernel package explicitly)"
    )]
    KernelPackageNotFound { meta: String },

    /// A kernel package name that is not a plain Debian package name.
    #[error("{name:?} is not a valid Debian package name")]
    InvalidPackageName { name: String },

    /// `apt-get download` reported success but left no `.deb` behind.
    #[error("`apt-get download {package}` produced no {package}_*.deb in {}", dir.display())]
    DownloadMissing { package: String, dir: PathBuf },

    /// A file the image needs is not in the extracted kernel package.
    #[error("kernel package {package} has no {}{hint}", path.display())]
    MissingKernelFile {
        package: String,
        path: PathBuf,
        /// Extra advice, empty or starting with "; ".
        hint: String,
    },

    /// The extracted kernel package holds zero or several kernels.
    #[error("kernel package {package}: expected exactly one {what} in {}, found {found:?}", dir.display())]
    AmbiguousKernel {
        package: String,
        what: &'static str,
        dir: PathBuf,
        found: Vec<String>,
    },

    /// A binary to embed is not a usable x86-64 ELF executable.
    #[error("the {what} binary at {} is not usable: {reason}", path.display())]
    BadBinary {
        /// "duplex" or "busybox".
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// The binary to embed needs a dynamic loader, which the guest lacks.
    #[error(
        "the duplex binary at {} is dynamically linked; build it with ./setup.sh (static)",
        path.display()
    )]
    DynamicBinary { path: PathBuf },

    /// The busybox to embed needs a dynamic loader, which the guest lacks.
    #[error(
        "the busybox at {} is dynamically linked; install the busybox-static package",
        path.display()
    )]
    DynamicBusybox { path: PathBuf },

    /// A file is too big for the newc cpio format (4 GiB - 1 bytes).
    #[error("{} is too large for a cpio archive ({size} bytes)", path.display())]
    TooLarge { path: PathBuf, size: u64 },

    /// The image name cannot be used as a directory name.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// No built image of that name exists.
    #[error(
        "no image named {name:?} in {}; {}run `duplex image build` to build it",
        dir.display(),
        available_text(available)
    )]
    UnknownImage {
        name: String,
        dir: PathBuf,
        available: Vec<String>,
    },

    /// An image spec that cannot be read or breaks a rule.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),

    /// A VM's root disk base is not in this host's copy of its image.
    #[error(
        "this host has no root disk base {name} in {}: build the same image here (`duplex image build --spec`) or copy that file",
        dir.display()
    )]
    MissingBase { name: String, dir: PathBuf },

    /// A manifest could not be encoded or decoded.
    #[error("bad manifest {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn available_text(available: &[String]) -> String {
    if available.is_empty() {
        "there are no images yet; ".to_string()
    } else {
        format!("available images: {}; ", available.join(", "))
    }
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
