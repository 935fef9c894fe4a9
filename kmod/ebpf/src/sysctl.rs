//! cgroup_sysctl: guests may read sysctls, never write them.

use aya_ebpf::{macros::cgroup_sysctl, programs::SysctlContext};

use crate::{ALLOW, DENY};

#[cgroup_sysctl]
pub fn cowfs_sysctl(ctx: SysctlContext) -> i32 {
    // SAFETY: the kernel hands every cgroup_sysctl program a valid bpf_sysctl.
    let write = unsafe { (*ctx.sysctl).write };
    if write == 0 { ALLOW } else { DENY }
}
