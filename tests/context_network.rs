//! The cgroup_sock_addr programs for real, IPv6 (bind6/connect6) and loopback modes: contexts
//! with IPv6 addresses (ULAs) and the three loopback modes (remap, deny, host) bind and connect
//! from inside with the guest's perl. Everything runs in a network namespace of its own (the
//! addresses live on its loopback interface), so the host's network is not touched.

mod context_support;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use context_support::{Contexts, guest};

/// Each argument is `OP,ADDRESS[,PORT]` with OP one of bind4, bind6, connect4, connect6; prints
/// `ARG=<local address>` on success (the address the socket got) or `ARG=E<errno>`.
const PROBE: &str = r#"
use strict; use warnings;
use Socket qw(:DEFAULT inet_pton inet_ntop pack_sockaddr_in6 unpack_sockaddr_in6 AF_INET6);
sub local_addr { my ($s) = @_; my $n = getsockname($s);
  if (sockaddr_family($n) == AF_INET6) { my (undef, $a) = unpack_sockaddr_in6($n); return inet_ntop(AF_INET6, $a) }
  my (undef, $a) = sockaddr_in($n); return inet_ntoa($a) }
for my $arg (@ARGV) {
  my ($op, $ip, $port) = split /,/, $arg;
  my $v6 = $op =~ /6$/;
  socket(my $s, $v6 ? AF_INET6 : PF_INET, SOCK_STREAM, 0) or die "socket: $!";
  my $sa = $v6 ? pack_sockaddr_in6($port // 0, inet_pton(AF_INET6, $ip))
               : sockaddr_in($port // 0, inet_aton($ip));
  my $ok = $op =~ /^bind/ ? bind($s, $sa) : connect($s, $sa);
  print "$arg=", ($ok ? local_addr($s) : "E" . ($! + 0)), "\n";
}
"#;

/// A network namespace with the test's addresses on its loopback, deleted on drop.
struct NetNs {
    name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    fn new(addrs: &[&str]) -> NetNs {
        let ns = NetNs {
            name: format!("cowfs-test-{}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        for a in addrs {
            ip(&["-n", &ns.name, "addr", "add", a, "dev", "lo"]);
        }
        ns
    }

    fn file(&self) -> std::fs::File {
        std::fs::File::open(format!("/run/netns/{}", self.name)).expect("netns handle")
    }

    /// Listening sockets bound inside the namespace (by a thread that enters it).
    fn listen(&self, addrs: &[&str]) -> Vec<TcpListener> {
        let handle = self.file();
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            nix::sched::setns(handle.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the netns");
            addrs
                .iter()
                .map(|a| TcpListener::bind(a.as_str()).unwrap_or_else(|e| panic!("{a}: {e}")))
                .collect()
        })
        .join()
        .expect("listener thread")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn port(l: &TcpListener) -> u16 {
    l.local_addr().expect("addr").port()
}

#[test]
fn ipv6_addresses_and_loopback_modes_are_enforced() {
    let ns = NetNs::new(&[
        "fd00:c0f5::2/128",
        "fd00:c0f5::3/128",
        "fd00:c0f5::4/128",
        "fd00:c0f5::5/128",
        "fd00:c0f5::6/128",
    ]);
    // What the contexts may or may not reach: the namespace's own loopback services (the
    // "host's" here) and a service on an address that belongs to no context.
    let listeners = ns.listen(&["[::1]:0", "127.0.0.1:0", "[fd00:c0f5::3]:0"]);
    let (p6, p4, pother) = (
        port(&listeners[0]),
        port(&listeners[1]),
        port(&listeners[2]),
    );

    let c = Contexts::new();
    let root = guest(c.dir.path(), "g");
    let r = root.to_str().expect("utf-8");
    for (xid, name, extra) in [
        ("231", "v6only", vec!["--ip", "fd00:c0f5::2"]),
        ("232", "lback", vec!["--ip", "fd00:c0f5::4,127.0.0.4"]),
        (
            "233",
            "host",
            vec!["--ip", "fd00:c0f5::5", "--loopback", "host"],
        ),
        (
            "234",
            "deny",
            vec!["--ip", "fd00:c0f5::6,127.0.0.6", "--loopback", "deny"],
        ),
    ] {
        let mut args = vec!["create", "--xid", xid, "--name", name, "--root", r];
        args.extend(extra);
        c.ok(&args);
    }
    let probe = |name: &str, ops: &[String]| -> HashMap<String, String> {
        let handle = ns.file();
        let mut cmd = Command::new(cowfs::bin("vcontext"));
        cmd.arg("--state-dir")
            .arg(c.state())
            .args(["run", name, "--", "/usr/bin/perl", "-e", PROBE])
            .args(ops);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&handle);
        // SAFETY: setns is async-signal-safe; the context starts inside the test's netns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("vcontext run");
        drop(handle);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let eperm = format!("E{}", libc::EPERM);
    let refused = format!("E{}", libc::ECONNREFUSED);
    let check = |name: &str, cases: &[(String, String)]| {
        let ops: Vec<String> = cases.iter().map(|(op, _)| op.clone()).collect();
        let got = probe(name, &ops);
        for (op, want) in cases {
            assert_eq!(
                got.get(op),
                Some(want),
                "context {name}, {op}: all results {got:?}"
            );
        }
    };
    let case = |op: String, want: &str| (op, want.to_string());

    // Only IPv6: its own address, the wildcard becomes it, others refused; ::1 and 127.0.0.1
    // are refused (remap without a 127.x address of its own); connections leave from its own
    // address, whatever the kernel would have picked.
    check(
        "v6only",
        &[
            case("bind6,fd00:c0f5::2".into(), "fd00:c0f5::2"),
            case("bind6,fd00:c0f5::3".into(), &eperm),
            case("bind6,::".into(), "fd00:c0f5::2"),
            case("bind6,::1".into(), &eperm),
            case("bind4,0.0.0.0".into(), &eperm),
            case("bind4,127.0.0.1".into(), &eperm),
            case(format!("connect6,fd00:c0f5::3,{pother}"), "fd00:c0f5::2"),
            case(format!("connect6,::1,{p6}"), &eperm),
            case(format!("connect4,127.0.0.1,{p4}"), &eperm),
        ],
    );
    // remap with a 127.x address: ::1 and 127.0.0.1 mean that address (the namespace's
    // services on loopback are not reached: nothing listens on 127.0.0.4).
    check(
        "lback",
        &[
            case("bind6,::1".into(), "::ffff:127.0.0.4"),
            case("bind4,127.0.0.1".into(), "127.0.0.4"),
            case("bind6,::".into(), "fd00:c0f5::4"),
            case(format!("connect6,::1,{p6}"), &refused),
            case(format!("connect4,127.0.0.1,{p4}"), &refused),
            case(format!("connect6,::ffff:127.0.0.1,{p4}"), &refused),
            case(format!("connect6,fd00:c0f5::3,{pother}"), "fd00:c0f5::4"),
        ],
    );
    // host: connecting to loopback services is allowed, binding loopback still is not.
    check(
        "host",
        &[
            case(format!("connect6,::1,{p6}"), "::1"),
            case(format!("connect4,127.0.0.1,{p4}"), "127.0.0.1"),
            case("bind6,::1".into(), &eperm),
            case("bind4,127.0.0.1".into(), &eperm),
            case("bind6,::".into(), "fd00:c0f5::5"),
        ],
    );
    // deny: no loopback but its own addresses.
    check(
        "deny",
        &[
            case(format!("connect6,::1,{p6}"), &eperm),
            case(format!("connect4,127.0.0.1,{p4}"), &eperm),
            case(format!("connect6,::ffff:127.0.0.1,{p4}"), &eperm),
            case("bind6,::1".into(), &eperm),
            case("bind4,127.0.0.1".into(), &eperm),
            case("bind4,127.0.0.6".into(), "127.0.0.6"),
            case("bind6,fd00:c0f5::6".into(), "fd00:c0f5::6"),
        ],
    );

    // Seen from the service: the connections to it came from the contexts' own addresses.
    let other = &listeners[2];
    other.set_nonblocking(true).expect("nonblocking");
    let mut peers = BTreeSet::new();
    while let Ok((_, peer)) = other.accept() {
        peers.insert(peer.ip().to_string());
    }
    assert_eq!(
        peers,
        BTreeSet::from(["fd00:c0f5::2".to_string(), "fd00:c0f5::4".to_string()])
    );
    // The loopback services saw exactly the host-mode context's two connections.
    let mut loopback_peers: Vec<SocketAddr> = Vec::new();
    for l in &listeners[..2] {
        l.set_nonblocking(true).expect("nonblocking");
        while let Ok((_, peer)) = l.accept() {
            loopback_peers.push(peer);
        }
    }
    assert_eq!(loopback_peers.len(), 2, "{loopback_peers:?}");
    assert!(loopback_peers.iter().all(|p| p.ip().is_loopback()));

    for name in ["v6only", "lback", "host", "deny"] {
        c.ok(&["destroy", name]);
    }
}
