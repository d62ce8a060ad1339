//! A VM's QEMU command line, built from a typed description (pure).
//!
//! Machine: `microvm` with ACPI (ENVIRONMENT.md: boots fastest under TCG,
//! 3.8 s vs 4.2-4.7 s for q35/pc; virtio-mmio devices are found through ACPI,
//! and the kernel needs `tsc_early_khz` there). No PCI is needed: the NIC and
//! the control channel are virtio-mmio devices.

use duplex_core::agent_api::AccelKind;
use duplex_core::mac::Mac;
use std::path::PathBuf;

/// Under TCG only: QEMU's software dirty tracking marks a page dirty on a
/// softmmu TLB miss, so a hot kernel page whose TLB entry survives a dirty
/// bitmap sync (global pages: `qemu64` is an AMD CPU, so Linux runs without
/// PTI) is written without being re-sent, and the destination gets device
/// state newer than guest RAM ("VQ 1 ... inconsistent with Host index",
/// guest: "output.0:id 0 is not a head!"). Measured in the lab: 3 of 3
/// 30-second migrations under UDP traffic broke the guest's NIC without
/// it, 3 of 3 were clean with it. With PTI every kernel entry and exit
/// reloads CR3, which flushes the TLB. KVM tracks dirty pages in hardware
/// and needs none of this.
pub const TCG_KERNEL_ARGS: &str = "pti=on";

#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub name: String,
    pub accel: AccelKind,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command-line words (the `duplex.*` ones).
    pub kernel_args: String,
    pub mac: Mac,
    /// Unix socket the network element listens on; QEMU connects to it.
    pub net_socket: PathBuf,
    /// Unix socket QEMU serves for the guest control channel.
    pub ctl_socket: PathBuf,
    pub qmp_socket: PathBuf,
    pub serial_log: PathBuf,
    /// Start as a migration destination (`-incoming defer`).
    pub incoming: bool,
    /// The VM's qcow2 overlay of its image's root disk: a virtio-blk
    /// device, `/dev/vda` in the guest, named by `duplex.root=`.
    pub disk: Option<PathBuf>,
    /// User data (JSON) handed to the guest as a firmware file.
    pub user_data: Option<PathBuf>,
    /// Guest RAM as this file (in `/dev/shm`), mapped shared so the agent
    /// can read it (an S2 primary) or start a VM on a copy (its backup).
    pub ram_file: Option<PathBuf>,
    /// Start from an S2 checkpoint: its device state carries no
    /// configuration section (see [`crate::checkpoint`]).
    pub from_checkpoint: bool,
}

/// The QEMU object id of a VM's RAM when it is a shared file.
pub const RAM_ID: &str = "ram0";

/// The QEMU drive id of the root disk (block migration names it).
pub const DISK_ID: &str = "disk0";
/// The guest device the root disk appears as.
pub const GUEST_ROOT_DEVICE: &str = "/dev/vda";

/// Kernel words every Duplex guest needs: serial console, a TSC frequency
/// so microvm's kernel does not hang calibrating against the PIT, and reboot
/// instead of hanging on panic.
pub const BASE_KERNEL_ARGS: &str = "console=ttyS0 tsc_early_khz=2000000 panic=-1 quiet";

/// QEMU's seccomp sandbox: no obsolete system calls, no new privileges, no
/// child processes (an `exec:` migration address, or anything a guest
/// could make QEMU spawn, fails), no changes to scheduling or resources.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

impl Launch {
    pub fn args(&self) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: String| a.push(s);
        push("-name".into());
        push(format!("guest={},debug-threads=on", self.name));
        push("-M".into());
        push(match self.ram_file {
            Some(_) => format!("microvm,acpi=on,pit=on,rtc=on,memory-backend={RAM_ID}"),
            None => "microvm,acpi=on,pit=on,rtc=on".into(),
        });
        if let Some(ram) = &self.ram_file {
            push("-object".into());
            push(format!(
                "memory-backend-file,id={RAM_ID},size={}M,mem-path={},share=on",
                self.memory_mib,
                p(ram)
            ));
        }
        if self.from_checkpoint {
            push("-global".into());
            push("migration.send-configuration=off".into());
        }
        push("-accel".into());
        push(match self.accel {
            AccelKind::Kvm => "kvm".into(),
            AccelKind::Tcg => "tcg".into(),
        });
        if self.accel == AccelKind::Kvm {
            push("-cpu".into());
            push("host".into());
        }
        push("-m".into());
        push(format!("{}M", self.memory_mib));
        push("-smp".into());
        push(self.vcpus.to_string());
        for s in ["-nodefaults", "-no-user-config", "-display", "none"] {
            push(s.into());
        }
        push("-sandbox".into());
        push(SANDBOX.into());
        push("-kernel".into());
        push(p(&self.kernel));
        push("-initrd".into());
        push(p(&self.initrd));
        push("-append".into());
        let root = match self.disk {
            Some(_) => format!(" duplex.root={GUEST_ROOT_DEVICE}"),
            None => String::new(),
        };
        push(match self.accel {
            AccelKind::Tcg => format!(
                "{BASE_KERNEL_ARGS} {TCG_KERNEL_ARGS} {}{root}",
                self.kernel_args
            ),
            AccelKind::Kvm => format!("{BASE_KERNEL_ARGS} {}{root}", self.kernel_args),
        });
        if let Some(disk) = &self.disk {
            push("-drive".into());
            push(format!(
                "if=none,id={DISK_ID},format=qcow2,file={}",
                p(disk)
            ));
            push("-device".into());
            push(format!("virtio-blk-device,drive={DISK_ID}"));
        }
        if let Some(data) = &self.user_data {
            push("-fw_cfg".into());
            push(format!(
                "name={},file={}",
                duplex_core::user_data::FW_CFG_NAME,
                p(data)
            ));
        }
        push("-chardev".into());
        push(format!("file,id=serial0,path={}", p(&self.serial_log)));
        push("-serial".into());
        push("chardev:serial0".into());
        push("-netdev".into());
        push(format!(
            "stream,id=net0,server=off,addr.type=unix,addr.path={}",
            p(&self.net_socket)
        ));
        push("-device".into());
        push(format!("virtio-net-device,netdev=net0,mac={}", self.mac));
        push("-device".into());
        push("virtio-serial-device,id=vser0".into());
        push("-chardev".into());
        push(format!(
            "socket,id=ctl0,path={},server=on,wait=off",
            p(&self.ctl_socket)
        ));
        push("-device".into());
        push(format!(
            "virtserialport,bus=vser0.0,chardev=ctl0,name={}",
            duplex_core::guest_proto::PORT_NAME
        ));
        push("-qmp".into());
        push(format!("unix:{},server=on,wait=off", p(&self.qmp_socket)));
        if self.incoming {
            push("-incoming".into());
            push("defer".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            name: "vm1".into(),
            accel: AccelKind::Tcg,
            memory_mib: 256,
            vcpus: 1,
            kernel: "/i/vmlinuz".into(),
            initrd: "/i/initramfs.img".into(),
            kernel_args: "duplex.name=vm1".into(),
            mac: Mac([0x52, 0x54, 0, 1, 2, 3]),
            net_socket: "/d/net.sock".into(),
            ctl_socket: "/d/ctl.sock".into(),
            qmp_socket: "/d/qmp.sock".into(),
            serial_log: "/d/serial.log".into(),
            incoming: false,
            disk: None,
            user_data: None,
            ram_file: None,
            from_checkpoint: false,
        }
    }

    fn value_of(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn tcg_microvm_with_element_and_control_channel() {
        let a = launch().args();
        assert_eq!(value_of(&a, "-accel"), ["tcg"]);
        assert!(value_of(&a, "-cpu").is_empty());
        assert_eq!(value_of(&a, "-m"), ["256M"]);
        assert!(value_of(&a, "-append")[0].contains("tsc_early_khz=2000000"));
        assert!(value_of(&a, "-append")[0].contains("pti=on"));
        assert!(value_of(&a, "-append")[0].ends_with("duplex.name=vm1"));
        assert!(value_of(&a, "-netdev")[0].contains("addr.path=/d/net.sock"));
        assert!(value_of(&a, "-sandbox")[0].contains("spawn=deny"));
        assert!(value_of(&a, "-device")
            .contains(&"virtio-net-device,netdev=net0,mac=52:54:00:01:02:03".to_string()));
        assert!(value_of(&a, "-device")
            .iter()
            .any(|d| d.contains("name=org.duplex.ctl")));
        assert!(!a.contains(&"-incoming".to_string()));
        assert!(value_of(&a, "-drive").is_empty());
        assert!(value_of(&a, "-fw_cfg").is_empty());
        assert!(!value_of(&a, "-append")[0].contains("duplex.root"));
    }

    #[test]
    fn a_root_disk_and_user_data() {
        let mut l = launch();
        l.disk = Some("/d/disk.qcow2".into());
        l.user_data = Some("/d/user-data.json".into());
        let a = l.args();
        assert_eq!(
            value_of(&a, "-drive"),
            ["if=none,id=disk0,format=qcow2,file=/d/disk.qcow2"]
        );
        assert!(value_of(&a, "-device").contains(&"virtio-blk-device,drive=disk0".to_string()));
        assert!(value_of(&a, "-append")[0].ends_with("duplex.name=vm1 duplex.root=/dev/vda"));
        assert_eq!(
            value_of(&a, "-fw_cfg"),
            ["name=opt/org.duplex/user-data,file=/d/user-data.json"]
        );
    }

    #[test]
    fn shared_ram_file_and_a_start_from_a_checkpoint() {
        assert!(value_of(&launch().args(), "-object").is_empty());
        let mut l = launch();
        l.ram_file = Some("/dev/shm/duplex-vm1".into());
        l.from_checkpoint = true;
        let a = l.args();
        assert_eq!(
            value_of(&a, "-M"),
            ["microvm,acpi=on,pit=on,rtc=on,memory-backend=ram0"]
        );
        assert_eq!(
            value_of(&a, "-object"),
            ["memory-backend-file,id=ram0,size=256M,mem-path=/dev/shm/duplex-vm1,share=on"]
        );
        assert_eq!(
            value_of(&a, "-global"),
            ["migration.send-configuration=off"]
        );
    }

    #[test]
    fn kvm_uses_host_cpu_and_incoming_defers() {
        let mut l = launch();
        l.accel = AccelKind::Kvm;
        l.incoming = true;
        let a = l.args();
        assert_eq!(value_of(&a, "-accel"), ["kvm"]);
        assert_eq!(value_of(&a, "-cpu"), ["host"]);
        assert!(!value_of(&a, "-append")[0].contains("pti=on"));
        assert_eq!(value_of(&a, "-incoming"), ["defer"]);
    }
}
