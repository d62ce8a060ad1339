//! The build pipeline: kernel package -> download -> extract -> collect
//! files -> initramfs -> atomic writes of the image and its manifest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::info;

use crate::elf::{self, Linkage};
use crate::error::ImageError;
use crate::manifest::{Inputs, Manifest, Outputs, FORMAT_VERSION};
use crate::{
    debian, fsutil, init_script, initramfs, kernel, BuildOptions, INITRAMFS, MANIFEST, VMLINUZ,
};

/// Build the kernel and initramfs of `opts.name` and write its manifest,
/// which carries `disk` when the image has a root disk.
pub fn build(
    opts: &BuildOptions,
    disk: Option<crate::manifest::Disk>,
) -> Result<Manifest, ImageError> {
    let started = Instant::now();
    crate::check_name(&opts.name)?;

    // 1. Which kernel.
    let package = match &opts.kernel_package {
        Some(p) => p.clone(),
        None => {
            let p = debian::resolve_kernel_package()?;
            info!(package = %p, "resolved {}", debian::KERNEL_METAPACKAGE);
            p
        }
    };
    debian::check_package_name(&package)?;

    // 2. Download and extract (both cached).
    let step = Instant::now();
    let (deb, cached) = debian::download(&opts.cache_dir.join("debs"), &package)?;
    info!(deb = %deb.display(), cached, elapsed_ms = ms(step), "kernel package downloaded");
    let step = Instant::now();
    let deb_record = fsutil::record_file(&deb)?;
    let root = opts.cache_dir.join("kernels").join(&package);
    let cached = debian::extract(&deb, &deb_record.sha256, &root)?;
    info!(dir = %root.display(), cached, elapsed_ms = ms(step), "kernel package extracted");

    // 3. Kernel and modules.
    let files = kernel::locate(&root, &package)?;
    let vmlinuz = read_input("read", &files.vmlinuz)?;
    let mut modules = Vec::with_capacity(files.modules.len());
    for (rel, path) in &files.modules {
        modules.push((kernel::module_name(rel), path, read_input("read", path)?));
    }
    info!(version = %files.version, modules = modules.len(), "kernel files found");

    // 4. Binaries to embed: both must run without a dynamic loader.
    let duplex = read_input("read the duplex binary", &opts.duplex_binary)?;
    match elf::linkage(&duplex) {
        Ok(Linkage::Static) => {}
        Ok(Linkage::Dynamic) => {
            return Err(ImageError::DynamicBinary {
                path: opts.duplex_binary.clone(),
            })
        }
        Err(reason) => {
            return Err(ImageError::BadBinary {
                what: "duplex",
                path: opts.duplex_binary.clone(),
                reason,
            })
        }
    }
    let busybox = read_input("read busybox", &opts.busybox)?;
    match elf::linkage(&busybox) {
        Ok(Linkage::Static) => {}
        Ok(Linkage::Dynamic) => {
            return Err(ImageError::DynamicBusybox {
                path: opts.busybox.clone(),
            })
        }
        Err(reason) => {
            return Err(ImageError::BadBinary {
                what: "busybox",
                path: opts.busybox.clone(),
                reason,
            })
        }
    }

    // 5. The initramfs.
    let step = Instant::now();
    let dir = opts.image_dir.join(&opts.name);
    let module_names: Vec<&str> = modules.iter().map(|(name, _, _)| *name).collect();
    let init = init_script::render(&module_names);
    let image_info = format!("name={}\nkernel={}\n", opts.name, files.version);
    let initramfs = initramfs::build_gz(&initramfs::Contents {
        busybox: &busybox,
        duplex: &duplex,
        modules: modules
            .iter()
            .map(|(name, _, data)| (*name, data.as_slice()))
            .collect(),
        init_script: &init,
        image_info: &image_info,
        service_config: duplex_guest::service::DEFAULT_CONFIG,
    })
    .map_err(|e| ImageError::io("build", dir.join(INITRAMFS), e))?;
    info!(
        bytes = initramfs.len(),
        elapsed_ms = ms(step),
        "initramfs built"
    );

    // 6. Write outputs, manifest last.
    fsutil::create_dir_all(&dir)?;
    fsutil::write_atomic(&dir.join(VMLINUZ), &vmlinuz)?;
    fsutil::write_atomic(&dir.join(INITRAMFS), &initramfs)?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: opts.name.clone(),
        kernel_package: package,
        kernel_version: files.version,
        inputs: Inputs {
            kernel_deb: deb_record,
            vmlinuz: fsutil::record(files.vmlinuz.display().to_string(), &vmlinuz),
            modules: modules
                .iter()
                .map(|(_, path, data)| fsutil::record(path.display().to_string(), data))
                .collect(),
            busybox: fsutil::record(opts.busybox.display().to_string(), &busybox),
            duplex_binary: fsutil::record(opts.duplex_binary.display().to_string(), &duplex),
            init_script: fsutil::record("init", init.as_bytes()),
        },
        outputs: Outputs {
            vmlinuz: fsutil::record(VMLINUZ, &vmlinuz),
            initramfs: fsutil::record(INITRAMFS, &initramfs),
        },
        disk,
    };
    let manifest_path = dir.join(MANIFEST);
    fsutil::write_atomic(&manifest_path, manifest.to_json().as_bytes())?;
    info!(
        dir = %dir.display(),
        initramfs_sha256 = %manifest.outputs.initramfs.sha256,
        elapsed_ms = ms(started),
        "image {} built",
        opts.name
    );
    Ok(manifest)
}

/// Read an input file, refusing anything the cpio format cannot hold.
fn read_input(op: &'static str, path: &Path) -> Result<Vec<u8>, ImageError> {
    let data = std::fs::read(path).map_err(|e| ImageError::io(op, path, e))?;
    if u32::try_from(data.len()).is_err() {
        return Err(ImageError::TooLarge {
            path: PathBuf::from(path),
            size: data.len() as u64,
        });
    }
    Ok(data)
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// The spec's root disk first (the long part), then the boot files and the
/// manifest, which names the disk.
pub fn build_spec(opts: &BuildOptions, spec_path: &Path) -> Result<Manifest, ImageError> {
    let started = Instant::now();
    let spec = crate::spec::ImageSpec::load(spec_path)?;
    let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
    let spec_record = fsutil::record_file(spec_path)?;
    // Every source file is readable before the long bootstrap starts.
    for (i, f) in spec.files.iter().enumerate() {
        if let Some(source) = &f.source {
            let path = spec_dir.join(source);
            std::fs::File::open(&path).map_err(|e| crate::spec::SpecError::Field {
                field: format!("files[{i}].source"),
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
        }
    }
    let opts = BuildOptions {
        name: spec.name.clone(),
        ..opts.clone()
    };
    let work = WorkDir::new(opts.cache_dir.join("build").join(format!(
        "{}.{}",
        spec.name,
        std::process::id()
    )))?;
    let root = work.0.join("root");

    info!(
        release = %spec.release,
        packages = spec.packages.len(),
        "bootstrapping the root filesystem with mmdebstrap (a minute or more)"
    );
    let step = Instant::now();
    crate::rootfs::bootstrap(&spec, &root)?;
    let files = crate::rootfs::add_files(&spec, spec_dir, &root)?;
    let packages = crate::rootfs::packages(&root)?;
    info!(
        packages = packages.len(),
        elapsed_ms = ms(step),
        "root filesystem ready"
    );

    let step = Instant::now();
    let needed = crate::disk::needed_bytes(&root)?;
    let size_mib = crate::disk::size_mib(needed, spec.disk.size_mib)?;
    let dir = opts.image_dir.join(&spec.name);
    fsutil::create_dir_all(&dir)?;
    let tmp = fsutil::temp_sibling(&dir.join("rootfs.qcow2"));
    crate::disk::make(&root, size_mib, &work.0.join("rootfs.raw"), &tmp)?;
    let record = fsutil::record_file(&tmp);
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // Named by its content: a rebuild never replaces a base that running
    // VMs' overlays stand on, and a host that has the name has the content.
    let base_name = crate::disk::base_name(&record.sha256);
    fsutil::rename(&tmp, &dir.join(&base_name))?;
    info!(
        size_mib,
        bytes = record.size,
        elapsed_ms = ms(step),
        "root disk written"
    );

    let disk = crate::manifest::Disk {
        spec: spec_record,
        release: spec.release.clone(),
        packages,
        files,
        size_mib,
        rootfs: crate::manifest::FileRecord {
            path: base_name.clone(),
            ..record
        },
    };
    let manifest = build(&opts, Some(disk))?;
    let removed = crate::disk::prune_bases(&dir, &base_name)?;
    if !removed.is_empty() {
        info!(?removed, "older root disk bases no VM runs on removed");
    }
    info!(
        elapsed_ms = ms(started),
        "image {} built from its spec", spec.name
    );
    Ok(manifest)
}

/// A build's scratch directory, removed however the build ends.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(path: PathBuf) -> Result<WorkDir, ImageError> {
        fsutil::remove_dir_all_if_exists(&path)?;
        fsutil::create_dir_all(&path)?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), "cannot remove the build's scratch directory: {e}");
        }
    }
}
