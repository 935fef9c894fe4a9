//! cgroup_device: a context may touch only the devices on its allowlist.

use aya_ebpf::{macros::cgroup_device, macros::map, maps::HashMap, programs::DeviceContext};

use crate::abi::{DEV_ANY, DevKey, MAX_DEVICES};
use crate::{ALLOW, DENY};

/// (kind, major, minor) → allowed `ACC_*` bits. Wildcards use [`DEV_ANY`].
#[map]
static DEVICES: HashMap<DevKey, u32> = HashMap::with_max_entries(MAX_DEVICES, 0);

fn allowed(kind: u32, major: u32, minor: u32) -> u32 {
    let key = DevKey { kind, major, minor };
    // SAFETY: the value is a plain u32 copied out at once; a concurrent update of the map can
    // only make us see the old or the new mask.
    unsafe { DEVICES.get(&key).copied().unwrap_or(0) }
}

#[cgroup_device]
pub fn cowfs_device(ctx: DeviceContext) -> i32 {
    // SAFETY: the kernel hands every cgroup_device program a valid bpf_cgroup_dev_ctx.
    let (access_type, major, minor) = unsafe {
        let dev = &*ctx.device;
        (dev.access_type, dev.major, dev.minor)
    };
    let kind = access_type & 0xffff;
    let wanted = access_type >> 16;
    let granted = allowed(kind, major, minor)
        | allowed(kind, major, DEV_ANY)
        | allowed(kind, DEV_ANY, DEV_ANY);
    if wanted & !granted == 0 { ALLOW } else { DENY }
}
