//! In-kernel parts of cowfs: eBPF programs and their loader, Landlock, kernel feature probes.
